// shoal token create|ls|revoke: API tokens on the provider (admin only).
import type { Command } from 'commander';
import { API_ROLES, type ApiRole, type TokenCreated, type TokenSummary, ShoalError } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { ago, providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

export function registerTokenCommands(program: Command): void {
  const token = program.command('token').description('API tokens: create (the secret is printed once), list, revoke');

  withProviderOptions(
    token
      .command('create')
      .description('make a token; its secret is printed once and only its hash is kept')
      .requiredOption('--role <role>', `one of ${API_ROLES.join(', ')}`)
      .option('--ttl <duration>', 'lifetime: 90s, 15m, 12h, 30d (default: no expiry)')
      .option('--service <name...>', 'invoke tokens: the services it may call (default: all)')
      .option('--note <text>', 'what the token is for'),
  ).action(async (opts: ClientOptions & { role: string; ttl?: string; service?: string[]; note?: string }) => {
    if (!API_ROLES.includes(opts.role as ApiRole)) throw new ShoalError('invalid', `--role must be one of ${API_ROLES.join(', ')}, got ${JSON.stringify(opts.role)}`, { field: 'role' });
    const { parseTtl } = await import('../../provider/index.ts');
    const ttlSeconds = opts.ttl === undefined ? undefined : parseTtl(opts.ttl);
    if (opts.ttl !== undefined && ttlSeconds === undefined) throw new ShoalError('invalid', `--ttl must look like 90s, 15m, 12h or 30d, got ${JSON.stringify(opts.ttl)}`, { field: 'ttl' });
    const body = {
      role: opts.role,
      ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
      ...(opts.service === undefined ? {} : { services: opts.service }),
      ...(opts.note === undefined ? {} : { note: opts.note }),
    };
    const r = await providerRequest<TokenCreated>(opts, 'POST', '/api/v1/tokens', body);
    printResult(opts, r, () => `${r.secret}\n(token ${r.token.id}, ${r.token.role}${r.token.expiresAt ? `, expires ${new Date(r.token.expiresAt).toISOString()}` : ''}: this secret is not shown again)`);
  });

  withProviderOptions(token.command('ls').description('list tokens (ids, roles, expiry, revocation; never secrets)')).action(async (opts: ClientOptions) => {
    const r = await providerRequest<{ tokens: TokenSummary[] }>(opts, 'GET', '/api/v1/tokens');
    const now = Date.now();
    printResult(opts, r, () =>
      table(
        ['ID', 'ROLE', 'SERVICES', 'CREATED', 'EXPIRES', 'STATE', 'NOTE'],
        r.tokens.map((t) => [
          t.id,
          t.role,
          t.services?.join(',') ?? '-',
          ago(t.createdAt, now),
          t.expiresAt === undefined ? 'never' : new Date(t.expiresAt).toISOString(),
          t.revokedAt !== undefined ? 'revoked' : t.expiresAt !== undefined && t.expiresAt <= now ? 'expired' : 'live',
          t.note ?? '',
        ]),
      ),
    );
  });

  withProviderOptions(token.command('revoke <id>').description('revoke a token now (every provider on the registry refuses it from its next call)')).action(
    async (id: string, opts: ClientOptions) => {
      const r = await providerRequest<{ revoked: string }>(opts, 'DELETE', `/api/v1/tokens/${encodeURIComponent(id)}`);
      printResult(opts, r, () => `revoked ${r.revoked}`);
    },
  );
}
