// shoal audit: the provider's record of mutating calls (admin only).
import type { Command } from 'commander';
import type { AuditEntry } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

export function registerAuditCommand(program: Command): void {
  withProviderOptions(
    program
      .command('audit')
      .description('who changed what: every mutating API call with its token id, role, address and status')
      .option('--service <name>', 'only calls about this service (or farm)')
      .option('--since <time>', 'ISO date or epoch ms (inclusive)')
      .option('--until <time>', 'ISO date or epoch ms (exclusive)')
      .option('--token-id <id>', 'only calls made with this token')
      .option('--limit <n>', 'newest N entries', '100'),
  ).action(async (opts: ClientOptions & { service?: string; since?: string; until?: string; tokenId?: string; limit: string }) => {
    const q = new URLSearchParams();
    if (opts.service !== undefined) q.set('service', opts.service);
    if (opts.since !== undefined) q.set('since', opts.since);
    if (opts.until !== undefined) q.set('until', opts.until);
    if (opts.tokenId !== undefined) q.set('token', opts.tokenId);
    q.set('limit', opts.limit);
    const r = await providerRequest<{ entries: AuditEntry[] }>(opts, 'GET', `/api/v1/audit?${q}`);
    printResult(opts, r, () =>
      table(
        ['TIME', 'TOKEN', 'ROLE', 'METHOD', 'PATH', 'SERVICE', 'FROM', 'STATUS'],
        r.entries.map((e) => [new Date(e.at).toISOString(), e.tokenId ?? '-', e.role ?? '-', e.method, e.path, e.service ?? '-', e.address ?? '-', String(e.status)]),
      ),
    );
  });
}
