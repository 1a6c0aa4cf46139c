// Compares two benchmark runs and flags regressions beyond noise.
//   node bench/compare.ts OLD NEW     (each a report.json, or the report.md next to it)
// Exit 0: no regression; 1: at least one figure got worse beyond noise; 2: bad input.
//
// Noise, per figure: the larger of a fixed floor for its kind (ratio 5 %, ms 10 % and at
// least 0.05 ms, rate 10 %: about what repeated runs on this 2-core machine move) and
// the run-to-run spread recorded with the figure, when it has per-run samples: about two
// standard errors of their median (1.86 × interquartile range / √n, over the median), in
// the old run or the new, whichever is wider. A change inside that band is noise;
// outside it, in the worse direction, a regression.
// Figures only one run has are listed, not judged. Machine, Node or a dirty tree
// differing between the runs is said first: then the comparison is only a hint.
import { readFile } from 'node:fs/promises';
import type { Figure, FigureKind, ReportJson } from './lib/figures.ts';

export const FLOORS: Record<FigureKind, { relative: number; absolute: number }> = {
  ratio: { relative: 0.05, absolute: 0 },
  ms: { relative: 0.1, absolute: 0.05 },
  rate: { relative: 0.1, absolute: 0 },
};

export type Verdict = 'regression' | 'improvement' | 'noise' | 'only-old' | 'only-new';

export interface FigureComparison {
  id: string;
  label: string;
  kind: FigureKind;
  old?: number;
  new?: number;
  /** (new − old) / |old|. */
  change?: number;
  /** The relative band counted as noise for this figure. */
  noise?: number;
  verdict: Verdict;
}

export interface Comparison {
  warnings: string[];
  figures: FigureComparison[];
  regressions: number;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * About two standard errors of the samples' median, relative to it: σ ≈ IQR / 1.349 and
 * SE(median) ≈ 1.253 σ / √n, so 2 SE ≈ 1.86 IQR / √n. 0 without at least three samples.
 */
export function spreadOf(samples: readonly number[] | undefined): number {
  if (samples === undefined || samples.length < 3) return 0;
  const m = Math.abs(median(samples));
  if (m === 0) return 0;
  return (1.86 * (quantile(samples, 0.75) - quantile(samples, 0.25))) / (Math.sqrt(samples.length) * m);
}

/** Linear interpolation between order statistics. */
function quantile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = p * (s.length - 1);
  const lo = Math.floor(at);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (at - lo);
}

export function compareFigure(a: Figure, b: Figure): FigureComparison {
  const floor = FLOORS[a.kind];
  const scale = Math.abs(a.value);
  const relativeFloor = Math.max(floor.relative, scale === 0 ? Infinity : floor.absolute / scale);
  const noise = Math.max(relativeFloor, spreadOf(a.samples), spreadOf(b.samples));
  const delta = b.value - a.value;
  const change = scale === 0 ? (delta === 0 ? 0 : Math.sign(delta) * Infinity) : delta / scale;
  const worse = a.better === 'higher' ? -change : change;
  const verdict: Verdict = Math.abs(change) <= noise || (scale === 0 && Math.abs(delta) <= floor.absolute) ? 'noise' : worse > 0 ? 'regression' : 'improvement';
  return { id: a.id, label: a.label, kind: a.kind, old: a.value, new: b.value, change, noise, verdict };
}

export function compareReports(a: ReportJson, b: ReportJson): Comparison {
  const warnings: string[] = [];
  const ma = a.meta.machine;
  const mb = b.meta.machine;
  if (ma.cpus !== mb.cpus || ma.cpuModel !== mb.cpuModel || ma.memoryGiB !== mb.memoryGiB) warnings.push(`different machines: ${ma.cpus} × ${ma.cpuModel}, ${ma.memoryGiB} GiB vs ${mb.cpus} × ${mb.cpuModel}, ${mb.memoryGiB} GiB`);
  if (a.meta.node !== b.meta.node) warnings.push(`different Node versions: ${a.meta.node} vs ${b.meta.node}`);
  for (const [name, r] of [['old', a], ['new', b]] as const) {
    if (r.meta.dirty) warnings.push(`the ${name} run (${r.meta.commit.slice(0, 12)}) had uncommitted changes`);
    if (r.meta.machine.loadAvgAtStart[0] > r.meta.machine.cpus) warnings.push(`the ${name} run started on a loaded machine (load ${r.meta.machine.loadAvgAtStart[0]} on ${r.meta.machine.cpus} CPUs)`);
  }
  const byId = (r: ReportJson) => new Map(r.sections.flatMap((s) => s.figures).map((f) => [f.id, f]));
  const fa = byId(a);
  const fb = byId(b);
  const figures: FigureComparison[] = [];
  for (const [id, f] of fa) {
    const g = fb.get(id);
    if (g === undefined) figures.push({ id, label: f.label, kind: f.kind, old: f.value, verdict: 'only-old' });
    else if (g.kind !== f.kind || g.better !== f.better) warnings.push(`${id}: kind or direction changed between the runs, not compared`);
    else figures.push(compareFigure(f, g));
  }
  for (const [id, g] of fb) if (!fa.has(id)) figures.push({ id, label: g.label, kind: g.kind, new: g.value, verdict: 'only-new' });
  return { warnings, figures, regressions: figures.filter((f) => f.verdict === 'regression').length };
}

export function formatComparison(c: Comparison, a: ReportJson, b: ReportJson): string {
  const num = (x: number | undefined) => (x === undefined ? '–' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(3));
  const pc = (x: number | undefined) => (x === undefined ? '–' : Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)} %` : '∞');
  return [
    `old: ${a.meta.commit.slice(0, 12)} ${a.meta.date}; new: ${b.meta.commit.slice(0, 12)} ${b.meta.date}`,
    ...c.warnings.map((w) => `warning: ${w}`),
    '',
    '| figure | old | new | change | noise ± | verdict |',
    '|---|---:|---:|---:|---:|---|',
    ...c.figures.map((f) => `| ${f.label} (\`${f.id}\`) | ${num(f.old)} | ${num(f.new)} | ${pc(f.change)} | ${f.noise === undefined ? '–' : pc(f.noise).replace('+', '')} | ${f.verdict === 'regression' ? '**REGRESSION**' : f.verdict} |`),
    '',
    c.regressions === 0 ? 'No regression beyond noise.' : `${c.regressions} regression(s) beyond noise.`,
  ].join('\n');
}

/** A report.json, or the report.md whose sidecar it is. */
export async function loadReport(path: string): Promise<ReportJson> {
  const file = path.endsWith('.md') ? `${path.slice(0, -3)}.json` : path;
  const parsed = JSON.parse(await readFile(file, 'utf8')) as Partial<ReportJson>;
  if (parsed.meta === undefined || !Array.isArray(parsed.sections)) throw new Error(`${file}: not a bench report (no meta or sections)`);
  return parsed as ReportJson;
}

if (import.meta.main) {
  const [oldPath, newPath] = process.argv.slice(2);
  if (oldPath === undefined || newPath === undefined) {
    process.stderr.write('usage: node bench/compare.ts OLD.json|OLD.md NEW.json|NEW.md\n');
    process.exit(2);
  }
  try {
    const [a, b] = await Promise.all([loadReport(oldPath), loadReport(newPath)]);
    const c = compareReports(a, b);
    process.stdout.write(`${formatComparison(c, a, b)}\n`);
    process.exitCode = c.regressions > 0 ? 1 : 0;
  } catch (e) {
    process.stderr.write(`compare: ${(e as Error).message}\n`);
    process.exit(2);
  }
}
