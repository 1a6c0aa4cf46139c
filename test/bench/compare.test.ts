import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compareFigure, compareReports, loadReport, spreadOf } from '../../bench/compare.ts';
import type { ReportJson } from '../../bench/lib/figures.ts';

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../bench/compare.ts', import.meta.url));
const OLD = join(FIXTURES, 'old-report.json');
const NEW = join(FIXTURES, 'new-report.json');

function runCompare(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, ...args], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }));
  });
}

test('two fixture reports: regressions beyond noise flagged, noise and improvements not', async () => {
  const c = compareReports(await loadReport(OLD), await loadReport(NEW));
  const verdict = Object.fromEntries(c.figures.map((f) => [f.id, f.verdict]));
  assert.deepEqual(verdict, {
    // 0.25 → 0.20 is −20 %, past the 5 % floor for a ratio.
    'provider.warm.rps-vs-direct': 'regression',
    // 12 → 18 ms is +50 %, inside the old runs' own spread (1.86 × IQR 8 / √5 / 12 ≈ 55 %): noise.
    'provider.cold.added-ms': 'noise',
    'provider.warm.p50-ms': 'improvement',
    'pull.ratio': 'noise',
    'pull.gone': 'only-old',
    'pull.added': 'only-new',
  });
  assert.equal(c.regressions, 1);
  assert.ok(c.warnings.some((w) => w.includes('uncommitted')), c.warnings.join('; '));
});

test('the spread recorded with a figure widens its noise band', () => {
  // Samples 4..20 around a median of 12: 1.86 × IQR 8 / √5 / 12 ≈ 0.55, so +50 % is noise.
  assert.ok(Math.abs(spreadOf([4, 8, 12, 16, 20]) - (1.86 * 8) / Math.sqrt(5) / 12) < 1e-9);
  // One outlier does not widen the band much (the IQR ignores it): +50 % is past it.
  assert.ok(spreadOf([10, 11, 12, 13, 300]) < 0.2);
  const base = { id: 'x', label: 'x', kind: 'ms' as const, better: 'lower' as const };
  assert.equal(compareFigure({ ...base, value: 12, samples: [4, 8, 12, 16, 20] }, { ...base, value: 18 }).verdict, 'noise');
  assert.equal(compareFigure({ ...base, value: 12, samples: [10, 11, 12, 13, 300] }, { ...base, value: 18 }).verdict, 'regression');
  // The same change with tight samples is a regression.
  assert.equal(compareFigure({ ...base, value: 12, samples: [11.9, 12, 12.1] }, { ...base, value: 18, samples: [17.9, 18, 18.1] }).verdict, 'regression');
  // Small absolute moves of a small latency stay noise (0.05 ms floor).
  assert.equal(compareFigure({ ...base, value: 0.1 }, { ...base, value: 0.14 }).verdict, 'noise');
  assert.equal(compareFigure({ ...base, value: 0.1 }, { ...base, value: 0.2 }).verdict, 'regression');
  // Higher-is-better figures regress downwards only.
  const rate = { id: 'r', label: 'r', kind: 'rate' as const, better: 'higher' as const };
  assert.equal(compareFigure({ ...rate, value: 1000 }, { ...rate, value: 1200 }).verdict, 'improvement');
  assert.equal(compareFigure({ ...rate, value: 1000 }, { ...rate, value: 800 }).verdict, 'regression');
});

test('the script exits 1 on a regression, 0 without, 2 on bad input, and reads the .md next to a .json', async () => {
  const bad = await runCompare(OLD, NEW);
  assert.equal(bad.code, 1, bad.stderr);
  assert.match(bad.stdout, /REGRESSION/);
  assert.match(bad.stdout, /provider\.warm\.rps-vs-direct/);
  const same = await runCompare(OLD, OLD);
  assert.equal(same.code, 0, same.stderr);
  assert.match(same.stdout, /No regression/);

  const dir = await mkdtemp(join(tmpdir(), 'shoal-compare-'));
  try {
    await cp(OLD, join(dir, 'a.json'));
    await writeFile(join(dir, 'a.md'), '# report\n');
    const viaMd = await runCompare(join(dir, 'a.md'), join(dir, 'a.json'));
    assert.equal(viaMd.code, 0, viaMd.stderr);
    await writeFile(join(dir, 'junk.json'), JSON.stringify({ hello: 1 }));
    const junk = await runCompare(join(dir, 'junk.json'), OLD);
    assert.equal(junk.code, 2);
    assert.match(junk.stderr, /not a bench report/);
    const missing = await runCompare(OLD);
    assert.equal(missing.code, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('fixture reports are the shape run.ts writes', async () => {
  const r = JSON.parse(await readFile(OLD, 'utf8')) as ReportJson;
  assert.equal(typeof r.meta.commit, 'string');
  assert.ok(r.sections.every((s) => s.command.includes('npm run bench')));
});
