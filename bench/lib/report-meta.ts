// What a report records about where it was measured: the commit (and whether the tree
// had uncommitted changes), the date, the machine and its load when the run started,
// and Node's version. Two reports are comparable only when these say so.
import { execFile } from 'node:child_process';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { promisify } from 'node:util';
import type { ReportMeta } from './figures.ts';

const run = promisify(execFile);

async function git(args: string[], cwd: string): Promise<string | undefined> {
  try {
    return (await run('git', args, { cwd })).stdout.trim();
  } catch (e) {
    process.stderr.write(`[bench] git ${args.join(' ')}: ${(e as Error).message}\n`);
    return undefined;
  }
}

/** Taken when the run starts (the load average is the machine's before the bench adds to it). */
export async function reportMeta(cwd: string): Promise<ReportMeta> {
  const commit = (await git(['rev-parse', 'HEAD'], cwd)) ?? 'unknown';
  const status = await git(['status', '--porcelain', '--untracked-files=no'], cwd);
  const [l1, l5, l15] = loadavg();
  return {
    commit,
    dirty: status === undefined ? true : status.length > 0,
    date: new Date().toISOString(),
    durationS: 0,
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown cpu',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      kernel: release(),
      loadAvgAtStart: [l1!, l5!, l15!].map((x) => Math.round(x * 100) / 100) as [number, number, number],
    },
    node: process.version,
  };
}

export function formatMeta(m: ReportMeta): string {
  const mc = m.machine;
  return [
    `- commit: \`${m.commit}\`${m.dirty ? ' (with uncommitted changes)' : ''}`,
    `- date: ${m.date}, ${m.durationS.toFixed(0)} s`,
    `- machine: ${mc.cpus} × ${mc.cpuModel}, ${mc.memoryGiB} GiB, Linux ${mc.kernel}; load average at start ${mc.loadAvgAtStart.join(', ')} (1, 5, 15 min)`,
    `- Node ${m.node}`,
  ].join('\n');
}
