// The dependency checker (.dependency-cruiser.cjs, run by `npm test`) rejects each kind of
// wrong import, naming its rule. It runs on a small scratch tree with one bad import per
// rule, then on the real src/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
// Run by this Node (24: node:sqlite is a built-in), not whatever `node` is on PATH.
const DEPCRUISE = join(ROOT, 'node_modules/dependency-cruiser/bin/dependency-cruise.mjs');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');

interface Violation {
  rule: { name: string; severity: string };
  from: string;
  to: string;
}

/** Runs the checker with the project's rules on `cwd`'s src/, as `npm test` does (`depcruise src`). */
function depcruise(cwd: string, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [DEPCRUISE, 'src', '--config', CONFIG, ...args], { cwd, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr });
    });
  });
}

/** The violations the checker finds in `cwd`'s src/. */
async function violationsIn(cwd: string, args: string[] = []): Promise<Violation[]> {
  const { code, stdout, stderr } = await depcruise(cwd, ['--output-type', 'json', ...args]);
  try {
    return (JSON.parse(stdout) as { summary: { violations: Violation[] } }).summary.violations;
  } catch (parseError) {
    throw new Error(`depcruise printed no JSON (exit ${code}): ${stderr}`, { cause: parseError });
  }
}

const listed = (violations: Violation[]): string[] => violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`);

async function writeTree(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
}

// A tree that keeps every rule: parts import each other's doors along allowed arrows.
const goodTree: Record<string, string> = {
  'src/protocol/index.ts': "export * from './errors.ts';\n",
  'src/protocol/errors.ts': 'export class ShoalError extends Error {}\n',
  'src/image/index.ts': "import { ShoalError } from '../protocol/index.ts';\nexport const image = ShoalError;\n",
  'src/host/index.ts': "export { agent } from './agent.ts';\n",
  'src/host/agent.ts': "import { image } from '../image/index.ts';\nexport const agent = image;\n",
  'src/service/index.ts': "import { ShoalError } from '../protocol/errors.ts';\nexport const service = ShoalError;\n",
  'src/cli/main.ts': "import { agent } from '../host/index.ts';\nexport const main = agent;\n",
  'examples/echo.ts': 'export const echo = 1;\n',
};

// One wrong import per rule, and the rule the checker must name.
const badImports: { rule: string; from: string; to: string; text: string }[] = [
  { rule: 'only-through-the-door', from: 'src/cli/bad-door.ts', to: 'src/host/agent.ts', text: "import { agent } from '../host/agent.ts';\n" },
  { rule: 'arrows-from-protocol', from: 'src/protocol/bad-arrow.ts', to: 'src/image/index.ts', text: "import { image } from '../image/index.ts';\n" },
  { rule: 'arrows-from-service', from: 'src/service/bad-arrow.ts', to: 'src/host/index.ts', text: "import { agent } from '../host/index.ts';\n" },
  { rule: 'arrows-from-image', from: 'src/image/bad-arrow.ts', to: 'src/cli/main.ts', text: "import { main } from '../cli/main.ts';\n" },
  { rule: 'service-only-protocol-errors', from: 'src/host/bad-errors.ts', to: 'src/protocol/errors.ts', text: "import { ShoalError } from '../protocol/errors.ts';\n" },
  { rule: 'src-not-to-outside', from: 'src/cli/bad-example.ts', to: 'examples/echo.ts', text: "import { echo } from '../../examples/echo.ts';\n" },
  { rule: 'no-cycles', from: 'src/host/cycle-a.ts', to: 'src/host/cycle-b.ts', text: "import { b } from './cycle-b.ts';\nexport const a = () => b;\n" },
  { rule: 'not-to-unresolvable', from: 'src/cli/bad-missing.ts', to: '../host/missing.ts', text: "import { gone } from '../host/missing.ts';\n" },
];

test('the checker passes a tree whose imports follow the arrows', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-arch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeTree(dir, goodTree);
  assert.deepEqual(listed(await violationsIn(dir)), []);
  assert.equal((await depcruise(dir)).code, 0);
});

test('the checker fails on each kind of wrong import and names its rule', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-arch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeTree(dir, {
    ...goodTree,
    ...Object.fromEntries(badImports.map((b) => [b.from, b.text])),
    'src/host/cycle-b.ts': "import { a } from './cycle-a.ts';\nexport const b = () => a;\n",
  });
  const violations = await violationsIn(dir);
  for (const bad of badImports) {
    assert.ok(
      violations.some((v) => v.rule.name === bad.rule && v.from === bad.from && v.to === bad.to),
      `expected ${bad.rule}: ${bad.from} → ${bad.to}; got ${JSON.stringify(listed(violations))}`,
    );
  }
  // The good tree's own imports stay clean among the bad ones.
  for (const v of violations) assert.ok(!(v.from in goodTree), `unexpected ${v.rule.name}: ${v.from} → ${v.to}`);
  // What `npm test` runs exits non-zero and names the rule.
  const plain = await depcruise(dir);
  assert.notEqual(plain.code, 0);
  assert.match(plain.stdout, /only-through-the-door: src\/cli\/bad-door\.ts → src\/host\/agent\.ts/);
});

// Shoal's own tree, as `npm test` checks it: no known violations are allowed.
test("Shoal's own src/ keeps every rule", async () => {
  const found = await violationsIn(ROOT, []);
  assert.deepEqual(listed(found.filter((v) => v.rule.severity !== 'ignore')), []);
});
