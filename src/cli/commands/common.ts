import type { Command } from 'commander';
import { ShoalError } from '../../protocol/index.ts';
import type { DriverName } from '../../host/index.ts';

export { DEFAULT_URL, normalizeUrl } from './client-options.ts';
import { DEFAULT_URL, normalizeUrl } from './client-options.ts';

export function storeUrl(opts: { store?: string }): string {
  return normalizeUrl(opts.store ?? process.env.SHOAL_STORE ?? DEFAULT_URL, 'store');
}

/** Parses HOST:PORT (port 0 lets the OS choose). */
export function parseListen(text: string, field = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new ShoalError('invalid', `--${field} must be HOST:PORT, got ${JSON.stringify(text)}`, { field });
  return { host: (m[1] ?? m[2]) as string, port };
}

export function withStoreOption(cmd: Command): Command {
  return cmd
    .option('--store <url>', `store URL (env SHOAL_STORE, default ${DEFAULT_URL})`)
    .option('--token <token>', 'API token (env SHOAL_TOKEN; default: the admin token in ./.shoal/admin-token)')
    .option('--json', 'print JSON');
}

/** Resolves on SIGINT/SIGTERM, so long-running commands can shut down in order. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

/** --driver: a driver the host's registry has (the host part loads only when it is given). */
export async function parseDriver(name: string | undefined): Promise<DriverName | undefined> {
  if (name === undefined) return undefined;
  const { driverNames, isDriverName } = await import('../../host/index.ts');
  if (!isDriverName(name)) throw new ShoalError('invalid', `--driver must be one of ${driverNames.join(', ')}, got ${JSON.stringify(name)}`, { field: 'driver' });
  return name;
}

/** --tls-cert, --tls-key and --insecure: what every listening role takes. */
export function withListenerTlsOptions(cmd: Command): Command {
  return cmd
    .option('--tls-cert <file>', 'serve HTTPS with this certificate chain (PEM)')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--insecure', 'allow plain HTTP on a non-loopback address (tokens and messages cross the network unencrypted)');
}

export interface ListenerTlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  insecure?: boolean;
}

/** The TLS identity and --insecure from a role's flags. */
export async function listenerTls(opts: ListenerTlsFlags): Promise<{ tls?: import('../../http/index.ts').TlsIdentity; insecure: boolean }> {
  const { readTlsIdentity } = await import('../../http/index.ts');
  const tls = readTlsIdentity({ certFile: opts.tlsCert, keyFile: opts.tlsKey });
  return { ...(tls === undefined ? {} : { tls }), insecure: opts.insecure === true };
}
