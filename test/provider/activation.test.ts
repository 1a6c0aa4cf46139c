// The activation policy and its estimator, table-driven: no hosts, no clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseActivation, createCostEstimator, PRIOR_MS, type ActivationCandidate } from '../../src/provider/activation/index.ts';

const c = (path: ActivationCandidate['path'], host: string, driver = 'wasm'): ActivationCandidate => ({ path, host, driver });

test('chooses the cheapest by estimate; ties go to the cheaper kind of path, then the order given', () => {
  const table: Array<[string, ActivationCandidate[], Record<string, number>, string]> = [
    ['priors: resume beats restore beats cold', [c('cold', 'h1'), c('restore', 'h2'), c('resume', 'h3')], {}, 'resume@h3'],
    ['a measured slow restore loses to a fast cold host', [c('restore', 'h1'), c('cold', 'h2')], { 'restore|h1': 900, 'cold|h2': 200 }, 'cold@h2'],
    ['the same path on two hosts: the faster host', [c('cold', 'h1'), c('cold', 'h2')], { 'cold|h1': 500, 'cold|h2': 300 }, 'cold@h2'],
    ['a tie: the earlier kind of path', [c('cold', 'h1'), c('fork', 'h2')], { 'cold|h1': 50, 'fork|h2': 50 }, 'fork@h2'],
  ];
  for (const [what, candidates, measured, expected] of table) {
    const r = chooseActivation(candidates, (x) => measured[`${x.path}|${x.host}`] ?? PRIOR_MS[x.path]);
    assert.equal(`${r?.choice.path}@${r?.choice.host}`, expected, what);
    assert.equal(r?.considered.length, candidates.length, `${what}: every candidate is kept for the attribution`);
    assert.ok(r!.considered.every((x, i, all) => i === 0 || all[i - 1]!.estimateMs <= x.estimateMs), `${what}: cheapest first`);
  }
  assert.equal(chooseActivation([], () => 0), undefined);
});

test('the estimator: priors first, then any host of the driver, then this host; averages move with measurements', () => {
  const e = createCostEstimator({ weight: 0.5 });
  assert.equal(e.estimate(c('restore', 'h1')), PRIOR_MS.restore);
  e.observe(c('restore', 'h2'), 100);
  assert.equal(e.estimate(c('restore', 'h1')), 100, "another host's measurement of the same driver");
  e.observe(c('restore', 'h1'), 20);
  assert.equal(e.estimate(c('restore', 'h1')), 20);
  e.observe(c('restore', 'h1'), 40);
  assert.equal(e.estimate(c('restore', 'h1')), 30, 'an average, weighted toward the newest');
  assert.equal(e.estimate(c('restore', 'h1', 'vm')), PRIOR_MS.restore, 'another driver is not mixed in');
  e.observe(c('cold', 'h1'), Number.NaN);
  e.observe(c('cold', 'h1'), -5);
  assert.equal(e.estimate(c('cold', 'h1')), PRIOR_MS.cold, 'nonsense is ignored');
});
