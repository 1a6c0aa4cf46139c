// Outbound connections a network caller can aim: the provider fetches images from any
// registry a deploy token names (and from the token realm and redirects that registry
// names). Without a guard that is a request forgery into the provider's own network:
// loopback admin ports, the cloud metadata address, private services. The guard sits in
// the connector, so it judges the address actually dialled — every redirect hop and every
// DNS answer (no rebinding window) — and refuses anything that is not a public unicast
// address, except the registries the operator names as allowed.
import { BlockList, isIP, type Socket } from 'node:net';
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { Agent, buildConnector } from 'undici';
import { undiciConnect } from './tls.ts';

const NON_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NON_PUBLIC.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['2001:db8::', 32], ['64:ff9b::', 96], ['100::', 64]] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv6');
}

/** A public unicast address: not loopback, private, link-local (metadata), shared, multicast or reserved. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !NON_PUBLIC.check(address, 'ipv4');
  if (family !== 6) return false;
  // An IPv4-mapped IPv6 address reaches the IPv4 one.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return isPublicAddress(mapped[1]!);
  return !NON_PUBLIC.check(address, 'ipv6');
}

export class EgressRefused extends Error {
  readonly code = 'ESHOALEGRESS';
  constructor(target: string) {
    super(`${target} is not a public address; the operator allows private registries with SHOAL_REGISTRY_ALLOW_PRIVATE=host[:port],…`);
  }
}

/** `host` or `host:port` entries; a bare host allows every port of it. */
export function parseAllowList(text: string | undefined): string[] {
  return (text ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
}

function guardedLookup(hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    const usable = addresses.filter((a) => isPublicAddress(a.address));
    if (usable.length === 0) return callback(Object.assign(new EgressRefused(`${hostname} (${addresses.map((a) => a.address).join(', ')})`), { code: 'ESHOALEGRESS' }), []);
    if (options.all) return callback(null, usable);
    callback(null, usable[0]!.address, usable[0]!.family);
  });
}

/**
 * An undici dispatcher whose connections reach only public addresses, or the hosts in
 * `allow` (the operator's own registries, e.g. `127.0.0.1:5000`, `registry.internal`).
 */
export function createEgressDispatcher(options: { allow?: readonly string[]; connections?: number } = {}): Agent {
  const allow = new Set((options.allow ?? []).map((s) => s.toLowerCase()));
  const tls = undiciConnect() ?? {};
  const open = buildConnector({ ...tls });
  const guarded = buildConnector({ ...tls, lookup: guardedLookup } as buildConnector.BuildOptions);
  const connect: buildConnector.connector = (opts, callback) => {
    const host = opts.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const port = opts.port || (opts.protocol === 'https:' ? '443' : '80');
    if (allow.has(host) || allow.has(`${host}:${port}`) || allow.has(`[${host}]:${port}`)) return open(opts, callback);
    if (isIP(host) !== 0 && !isPublicAddress(host)) {
      callback(new EgressRefused(`${host}:${port}`), null);
      return;
    }
    return guarded(opts, callback as (err: Error | null, socket: Socket | null) => void);
  };
  return new Agent({ connect, connections: options.connections ?? 16 });
}
