import type { Command } from 'commander';
import { fetch } from 'undici';
import { totalmem, availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { ShoalError } from '../../protocol/index.ts';
import { listenerTls, normalizeUrl, parseDriver, parseListen, untilSignal, withListenerTlsOptions, type ListenerTlsFlags } from './common.ts';
import { othersCanTraverse } from './reachable-dir.ts';

function positiveInt(text: string, field: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new ShoalError('invalid', `--${field} must be a positive integer, got ${JSON.stringify(text)}`, { field });
  return n;
}

/**
 * Default capacity: three quarters of this machine's memory, and its CPU four times over.
 * CPU is compressible (an instance's cpuMillis is its quota, and idle services use
 * little), so it is overcommitted the way Kubernetes and Nomad schedulers let requests
 * exceed cores; memory is not, because running out of it kills.
 */
export function defaultCapacity() {
  return {
    memoryMb: Math.floor((totalmem() / 1024 / 1024) * 0.75),
    cpuMillis: availableParallelism() * 1000 * 4,
    instances: 64,
  };
}

export function registerHostCommand(program: Command): void {
  withListenerTlsOptions(program
    .command('host'))
    .description('run a host agent: admits deployments, pulls layers, runs instances isolated, forwards messages')
    .option('--listen <host:port>', 'control API address', '127.0.0.1:7080')
    .option('--data-listen <host:port>', 'data-plane (forwarder) address', '127.0.0.1:7081')
    .option('--data <dir>', 'instances, layer cache and the host key', './.shoal/host')
    .option('--token <token>', 'bearer token of the control API (env SHOAL_HOST_TOKEN)')
    .option('--driver <name>', 'instance driver (default: runc when present and root, else process)')
    .option('--memory <mb>', 'memory capacity in MiB')
    .option('--cpu <millis>', 'CPU capacity in millicores')
    .option('--instances <n>', 'most instances at once')
    .option('--layer-cache <mb>', 'budget of the unpacked-layer cache in MiB', '10240')
    .option('--keep-instances', 'on SIGTERM leave instances running for the next start to re-adopt')
    .option('--provider <url>', 'register with this provider once started (needs --join-token)')
    .option('--join-token <token>', "the provider's join token (env SHOAL_JOIN_TOKEN)")
    .option('--store-token <token>', 'API token for the store: a read token pulls images when anonymous pulls are off; captured states (snapshot, suspend, migrate) need a deploy token (env SHOAL_STORE_TOKEN)')
    .option('--labels <k=v,...>', 'labels placement can select this host by')
    .option('--route-token-ttl <seconds>', 'lifetime of the route tokens this host signs (the provider re-signs them before expiry)', '600')
    .option('--json', 'print one JSON line (host id, URLs) when ready')
    .action(
      async (opts: {
        listen: string;
        dataListen: string;
        data: string;
        token?: string;
        storeToken?: string;
        driver?: string;
        memory?: string;
        cpu?: string;
        instances?: string;
        layerCache: string;
        keepInstances?: boolean;
        provider?: string;
        joinToken?: string;
        labels?: string;
        routeTokenTtl: string;
        json?: boolean;
      } & ListenerTlsFlags) => {
        const secure = await listenerTls(opts);
        const token = opts.token ?? process.env.SHOAL_HOST_TOKEN;
        if (!token || token.length < 8) {
          throw new ShoalError('invalid', 'a control token of at least 8 characters is required (--token or SHOAL_HOST_TOKEN)', { field: 'token' });
        }
        const driver = await parseDriver(opts.driver);
        const labels = parseLabels(opts.labels);
        const joinToken = opts.joinToken ?? process.env.SHOAL_JOIN_TOKEN;
        if (opts.provider !== undefined && !joinToken) {
          throw new ShoalError('invalid', '--provider needs the provider\'s join token (--join-token or SHOAL_JOIN_TOKEN)', { field: 'join-token' });
        }
        const d = defaultCapacity();
        const capacity = {
          memoryMb: opts.memory ? positiveInt(opts.memory, 'memory') : d.memoryMb,
          cpuMillis: opts.cpu ? positiveInt(opts.cpu, 'cpu') : d.cpuMillis,
          instances: opts.instances ? positiveInt(opts.instances, 'instances') : d.instances,
        };
        const { startHost, defaultDriverName } = await import('../../host/index.ts');
        const { createLogger } = await import('../logger.ts');
        // Flags first: a listener that would need TLS is refused before anything else is checked.
        const { checkBindAddress } = await import('../../http/index.ts');
        const plain = { tls: secure.tls !== undefined, insecure: secure.insecure, warn: () => {} }; // startHost warns
        checkBindAddress('the host control API', parseListen(opts.listen).host, plain);
        checkBindAddress('the host data plane', parseListen(opts.dataListen, 'data-listen').host, plain);
        // As root the process driver runs instances as another user: fail now, not at their first spawn.
        if (process.getuid?.() === 0 && (driver ?? (await defaultDriverName())) === 'process' && !(await othersCanTraverse(resolve(opts.data)))) {
          throw new ShoalError('invalid', `instances run as an unprivileged user and cannot enter ${resolve(opts.data)} (a directory above it is not searchable by others): choose --data elsewhere, e.g. /var/lib/shoal/host`, { field: 'data' });
        }
        const host = await startHost({
          dataDir: opts.data,
          listen: parseListen(opts.listen),
          dataListen: parseListen(opts.dataListen, 'data-listen'),
          token,
          storeToken: opts.storeToken ?? process.env.SHOAL_STORE_TOKEN,
          capacity,
          ...(driver === undefined ? {} : { driver }),
          layerCacheBytes: positiveInt(opts.layerCache, 'layer-cache') * 1024 * 1024,
          ...secure,
          tokenTtlMs: positiveInt(opts.routeTokenTtl, 'route-token-ttl') * 1000,
          logger: createLogger('host'),
        });
        // Listen for Ctrl-C before saying ready: a signal right after the ready line must stop in order.
        const stopped = untilSignal();
        if (opts.json) process.stdout.write(`${JSON.stringify({ hostId: host.hostId, controlUrl: host.controlUrl, dataUrl: host.dataUrl, data: opts.data })}\n`);
        else process.stdout.write(`shoal host ${host.hostId}: control ${host.controlUrl}  data ${host.dataUrl}\n`);
        const stop = new AbortController();
        if (opts.provider !== undefined) {
          const provider = normalizeUrl(opts.provider, 'provider');
          void registerWithProvider(provider, joinToken!, { controlUrl: host.controlUrl, token, labels }, stop.signal).then(
            (id) => process.stdout.write(opts.json ? `${JSON.stringify({ registered: id, provider })}\n` : `registered with the provider at ${provider} as ${id}\n`),
            (e: unknown) => process.stderr.write(`shoal host: registering with ${provider} failed: ${(e as Error).message}\n`),
          );
        }
        await stopped;
        stop.abort();
        await host.close({ stopInstances: !opts.keepInstances });
      },
    );
}

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (text === undefined || text.trim() === '') return labels;
  for (const part of text.split(',')) {
    const m = /^\s*([^=\s]+)=(.*)$/.exec(part);
    if (!m) throw new ShoalError('invalid', `--labels must be k=v,k=v, got ${JSON.stringify(part)}`, { field: 'labels' });
    labels[m[1]!] = m[2]!.trim();
  }
  return labels;
}

/**
 * POST /api/v1/hosts with the join token; the provider then reaches this host with its
 * control token. Retries while the provider is not up yet (up to about a minute); a
 * refusal (wrong join token, host unreachable from the provider) is final.
 */
async function registerWithProvider(
  provider: string,
  joinToken: string,
  body: { controlUrl: string; token: string; labels: Record<string, string> },
  signal: AbortSignal,
): Promise<string> {
  let delay = 250;
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(`${provider}/api/v1/hosts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${joinToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal,
      });
      const text = await res.text();
      if (res.ok) return (JSON.parse(text) as { id: string }).id;
      let message = text;
      try {
        message = (JSON.parse(text) as { error: { message: string } }).error.message;
      } catch {
        // not JSON
      }
      if (res.status < 500 || Date.now() > deadline) throw new Error(`HTTP ${res.status}: ${message}`);
    } catch (e) {
      if (signal.aborted) throw e;
      if ((e as Error).message.startsWith('HTTP ') || Date.now() > deadline) throw e;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}
