// `shoal registry login|logout|list`: credentials for other registries, kept by the
// provider (it copies their images into its store). The password is read from stdin (or
// SHOAL_REGISTRY_PASSWORD), never from an argument (other users see those in ps), and is
// never printed.
import type { Command } from 'commander';
import { ShoalError } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

async function readStdin(limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of process.stdin) {
    n += (c as Buffer).length;
    if (n > limit) throw new ShoalError('too-large', `the password on stdin is longer than ${limit} bytes`, { field: 'password' });
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export function registerRegistryCommands(program: Command): void {
  const registry = program.command('registry').description("credentials for other OCI registries (the provider copies their images into Shoal's store)");
  withProviderOptions(
    registry
      .command('login <scope>')
      .description('check a username and password against HOST[:PORT] and have the provider keep them (0600); HOST[:PORT]/NAMESPACE lends them only to repositories under NAMESPACE')
      .requiredOption('-u, --username <user>', 'user name at the registry')
      .option('--password-stdin', 'read the password from stdin (default when SHOAL_REGISTRY_PASSWORD is unset)'),
  ).action(async (host: string, opts: ClientOptions & { username: string; passwordStdin?: boolean }) => {
    const fromEnv = process.env.SHOAL_REGISTRY_PASSWORD;
    if (!opts.passwordStdin && fromEnv === undefined && process.stdin.isTTY) {
      throw new ShoalError('invalid', 'give the password on stdin (--password-stdin) or in SHOAL_REGISTRY_PASSWORD', { field: 'password' });
    }
    const password = opts.passwordStdin || fromEnv === undefined ? await readStdin(16384) : fromEnv;
    const r = await providerRequest<{ host: string; username: string }>(opts, 'PUT', `/api/v1/registry-logins/${encodeURIComponent(host)}`, { username: opts.username, password });
    printResult(opts, r, () => `logged in to ${r.host} as ${r.username}`);
  });
  withProviderOptions(registry.command('logout <scope>').description('forget the credentials kept for HOST[:PORT][/NAMESPACE]')).action(async (host: string, opts: ClientOptions) => {
    const r = await providerRequest<{ removed: string }>(opts, 'DELETE', `/api/v1/registry-logins/${encodeURIComponent(host)}`);
    printResult(opts, r, () => `forgot the login for ${r.removed}`);
  });
  withProviderOptions(registry.command('list').description('registries with kept credentials (user names only)')).action(async (opts: ClientOptions) => {
    const r = await providerRequest<{ logins: Array<{ host: string; username: string }> }>(opts, 'GET', '/api/v1/registry-logins');
    printResult(opts, r, () => (r.logins.length === 0 ? 'no registry logins' : table(['REGISTRY', 'USERNAME'], r.logins.map((l) => [l.host, l.username]))));
  });
}
