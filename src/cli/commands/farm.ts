// shoal apply <farm.ts>: type-check a farm script, then realise it on the provider.
// shoal graph <farm.ts>: print its call graph (JSON or Graphviz DOT); nothing is applied.
import type { Command } from 'commander';
import { ShoalError } from '../../protocol/index.ts';
import { providerUrl, withProviderOptions, type ClientOptions } from './provider-client.ts';
import { resolveToken } from './credentials.ts';

export function registerFarmCommands(program: Command): void {
  withProviderOptions(
    program
      .command('apply <file>')
      .description('type-check a farm script (shoal/compose) and realise it on the provider; applying it again changes nothing'),
  ).action(async (file: string, opts: ClientOptions) => {
    const { applyFarm } = await import('../../compose/index.ts');
    const token = resolveToken(opts);
    const r = await applyFarm(file, { url: providerUrl(opts), ...(token === undefined ? {} : { token }) });
    if (opts.json) return void process.stdout.write(`${JSON.stringify(r)}\n`);
    if (!r.changed) return void process.stdout.write(`farm ${r.farm}: unchanged\n`);
    const lines = r.changes.map((c) => `  ${c.kind === 'added' ? '+' : c.kind === 'removed' ? '-' : '~'} ${c.what} ${c.id}`);
    process.stdout.write(`farm ${r.farm}: applied (${r.changes.length} change${r.changes.length === 1 ? '' : 's'})\n${lines.join('\n')}\n  instances: ${r.services.join(', ')}\n`);
  });

  program
    .command('graph <file>')
    .description("print a farm script's call graph (nodes: instances, imports, intermediaries; edges: possible calls)")
    .option('--format <format>', 'json or dot', 'json')
    .option('--json', 'the same as --format json (the default)')
    .action(async (file: string, opts: { format: string; json?: boolean }) => {
      if (opts.json) opts.format = 'json';
      if (opts.format !== 'json' && opts.format !== 'dot') throw new ShoalError('invalid', `--format must be json or dot, not ${JSON.stringify(opts.format)}`, { field: 'format' });
      const { loadFarm } = await import('../../compose/index.ts');
      const { edgesOf, toDot } = await import('../../compose/index.ts');
      const graph = await loadFarm(file);
      process.stdout.write(opts.format === 'dot' ? toDot(graph) : `${JSON.stringify({ ...graph, edges: edgesOf(graph) }, null, 2)}\n`);
    });
}
