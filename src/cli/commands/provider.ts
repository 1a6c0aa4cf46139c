import { join } from 'node:path';
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { ShoalError } from '../../protocol/index.ts';
import { listenerTls, normalizeUrl, parseListen, untilSignal, withListenerTlsOptions, type ListenerTlsFlags } from './common.ts';

export function registerProviderCommand(program: Command): void {
  withListenerTlsOptions(program
    .command('provider'))
    .description('run a service provider: deploys services on their first message, routes, scales, heals; hosts register with it')
    .option('--listen <host:port>', 'address of the message path and the control API', '127.0.0.1:7070')
    .option('--db <url|path>', 'registry: postgres://… or a SQLite file (env SHOAL_DATABASE_URL, default ./.shoal/shoal.db)')
    .option('--store <url>', 'the store hosts pull images from (env SHOAL_STORE)')
    .option('--join-token <token>', 'token hosts register with (env SHOAL_JOIN_TOKEN; default: a random one, printed)')
    .option('--advertise <host>', 'the address hosts and consumers reach this one at, put in the URLs it hands out (default: the --listen host, or 127.0.0.1 on a wildcard)')
    .option('--provider-id <id>', 'stable id of this provider in a shared registry (default hostname:port)')
    .option('--data <dir>', 'state directory: the admin token made on first start', './.shoal')
    .option('--store-token <token>', 'API token for reading the store when it refuses anonymous pulls (env SHOAL_STORE_TOKEN)')
    .option('--json', 'print one JSON line (URL, registry, token path) when ready')
    .action(async (opts: { listen: string; db?: string; store?: string; joinToken?: string; providerId?: string; data: string; storeToken?: string; advertise?: string; json?: boolean } & ListenerTlsFlags) => {
      const listen = parseListen(opts.listen);
      const secure = await listenerTls(opts);
      const store = opts.store ?? process.env.SHOAL_STORE;
      if (store === undefined) throw new ShoalError('invalid', 'the store hosts pull from is needed: --store URL or SHOAL_STORE', { field: 'store' });
      const joinToken = opts.joinToken ?? process.env.SHOAL_JOIN_TOKEN ?? randomBytes(18).toString('base64url');
      if (joinToken.length < 8) throw new ShoalError('invalid', 'the join token must be at least 8 characters', { field: 'join-token' });
      const { startProvider } = await import('../../provider/index.ts');
      const { createLogger } = await import('../logger.ts');
      const database = opts.db ?? process.env.SHOAL_DATABASE_URL;
      const storeToken = opts.storeToken ?? process.env.SHOAL_STORE_TOKEN;
      const provider = await startProvider({
        ...(storeToken === undefined ? {} : { storeToken: () => storeToken }),
        registryAuthFile: process.env.SHOAL_REGISTRY_AUTH_FILE ?? join(opts.data, 'registry-auth.json'),
        listen,
        ...(database === undefined ? {} : { database }),
        storeUrl: normalizeUrl(store, 'store'),
        joinToken,
        ...secure,
        ...(opts.advertise === undefined ? {} : { advertiseHost: opts.advertise }),
        ...(opts.providerId === undefined ? {} : { providerId: opts.providerId }),
        logger: createLogger('provider'),
      });
      const { ensureAdminToken } = (await import('../../provider/index.ts')).auth;
      const admin = await ensureAdminToken(opts.data, provider.registry);
      // Listen for Ctrl-C before saying ready: a signal right after the ready line must stop in order.
      const stopped = untilSignal();
      const info = await provider.registry.info();
      const joinShown = opts.joinToken || process.env.SHOAL_JOIN_TOKEN ? '<the join token>' : joinToken;
      if (opts.json) {
        const ready = { providerId: provider.providerId, provider: provider.url, registry: { dialect: info.dialect, location: info.location }, adminToken: admin.path, joinToken: joinShown === joinToken ? joinToken : undefined };
        process.stdout.write(`${JSON.stringify(ready)}\n`);
      } else process.stdout.write(
        [
          `shoal provider ${provider.providerId}: ${provider.url}`,
          `  messages   POST ${provider.url}/s/<service>/<operation>`,
          `  API        ${provider.url}/api/v1/  (OpenAPI ${provider.url}/openapi.json, metrics ${provider.url}/metrics)`,
          `  dashboard  ${provider.url}/ui/  (log in with an API token)`,
          `  registry   ${info.dialect} ${info.location}`,
          `  admin      ${admin.created ? 'made a token in' : 'token in'} ${admin.path} (the CLI reads it from there, or SHOAL_TOKEN)`,
          // The host's --token is its own control token (any secret of 8+ characters), sent on join.
          `  hosts join with: shoal host --provider ${provider.url} --join-token ${joinShown} --token <a control token for that host>`,
          '',
        ].join('\n'),
      );
      await stopped;
      await provider.close();
    });
}
