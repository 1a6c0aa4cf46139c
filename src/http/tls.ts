// TLS at the edges (issue 9, item 3). Every role's listener is made here, plain or TLS,
// and every client trusts one extra CA (the operator's, --tls-ca / SHOAL_TLS_CA) on top of
// the system roots. A non-loopback address is bound only with TLS, or when the operator
// said --insecure (then with a warning).
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, globalAgent as httpsGlobalAgent } from 'node:https';
import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import { Agent, setGlobalDispatcher } from 'undici';
import { ShoalError } from '../protocol/index.ts';

/** A listener's certificate chain and key, PEM text. */
export interface TlsIdentity {
  cert: string;
  key: string;
}

/** Reads --tls-cert/--tls-key; both or neither. A missing or unreadable file is a clear error. */
export function readTlsIdentity(files: { certFile?: string | undefined; keyFile?: string | undefined }): TlsIdentity | undefined {
  const { certFile, keyFile } = files;
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) {
    throw new ShoalError('invalid', 'TLS needs both --tls-cert and --tls-key (PEM files)', { field: certFile === undefined ? 'tls-cert' : 'tls-key' });
  }
  return { cert: readPem(certFile, 'tls-cert', 'CERTIFICATE'), key: readPem(keyFile, 'tls-key', 'PRIVATE KEY') };
}

function readPem(file: string, field: string, label: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ShoalError('invalid', `cannot read --${field} ${file}: ${(e as Error).message}`, { field });
  }
  if (!text.includes(`-----BEGIN `) || !text.includes(label)) throw new ShoalError('invalid', `--${field} ${file} is not a PEM file holding a ${label}`, { field });
  return text;
}

export interface ListenerOptions extends ServerOptions {
  /** Serve HTTPS with this identity; plain HTTP without. */
  tls?: TlsIdentity | undefined;
}

/** The one place a role's server is made: node:https with `tls`, node:http without. */
export function createListener(options: ListenerOptions, handler: RequestListener<typeof IncomingMessage, typeof ServerResponse>): Server {
  const { tls, ...rest } = options;
  if (tls === undefined) return createHttpServer(rest, handler);
  // An https.Server is a tls.Server whose request handling is node:http's: callers treat it as one.
  return createHttpsServer({ ...rest, cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'] }, handler) as unknown as Server;
}

/** Whether `host` is a loopback address (127/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h.startsWith('::ffff:127.');
}

/**
 * Refuses to bind a non-loopback address over plain HTTP: tokens and messages would cross
 * the network in clear. `insecure` allows it, with a warning.
 */
export function checkBindAddress(what: string, host: string, o: { tls: boolean; insecure?: boolean | undefined; warn?: (message: string) => void }): void {
  if (o.tls || isLoopbackHost(host)) return;
  if (o.insecure === true) {
    (o.warn ?? ((m: string) => process.stderr.write(`warning: ${m}\n`)))(`${what} listens on ${host} over plain HTTP (--insecure): tokens and messages cross the network unencrypted`);
    return;
  }
  throw new ShoalError('invalid', `${what} would listen on ${host}, which is not loopback, over plain HTTP: give --tls-cert and --tls-key, or --insecure to accept cleartext`, { field: 'listen' });
}

let extraCa: string | undefined;

/** The operator's CA (PEM), if one was given; clients add it to the system roots. */
export function trustedCa(): string | undefined {
  return extraCa;
}

/** `ca` for tls.connect / https agents: the system roots plus the operator's CA; undefined = defaults. */
export function caOption(): string[] | undefined {
  return extraCa === undefined ? undefined : [...rootCertificates, extraCa];
}

/**
 * Trusts a CA file process-wide: undici's global dispatcher (fetch, request), node:https's
 * global agent, and the connections createUpstream and the host links open. Called once at
 * start by each role and the CLI, from --tls-ca or SHOAL_TLS_CA.
 */
export function trustCaFile(file: string): void {
  const pem = readPem(file, 'tls-ca', 'CERTIFICATE');
  extraCa = pem;
  const ca = caOption()!;
  setGlobalDispatcher(new Agent({ connect: { ca } }));
  httpsGlobalAgent.options.ca = ca;
}

/** An undici Agent that trusts the operator's CA too (for modules that keep their own). */
export function undiciConnect(): { ca: string[] } | undefined {
  const ca = caOption();
  return ca === undefined ? undefined : { ca };
}
