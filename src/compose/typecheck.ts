// `shoal apply` refuses a farm script that does not type-check: the types are what make a
// miswired farm an error before anything is deployed (Baltic's message safety). This runs
// the project's TypeScript compiler on the one script with a generated tsconfig.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShoalError } from '../protocol/index.ts';

export interface TypeCheckResult {
  ok: boolean;
  /** The compiler's diagnostics, as it prints them (empty when ok). */
  diagnostics: string;
}

/** The package root: src/compose/ (dist/compose/ once installed) is two levels down. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The compiler options farm scripts are checked with (the project's strict settings). */
export const FARM_COMPILER_OPTIONS = {
  target: 'es2024',
  module: 'nodenext',
  moduleResolution: 'nodenext',
  lib: ['es2024'],
  types: ['node'],
  typeRoots: [join(ROOT, 'node_modules/@types')],
  strict: true,
  noEmit: true,
  allowImportingTsExtensions: true,
  erasableSyntaxOnly: true,
  verbatimModuleSyntax: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: true,
  pretty: false,
};

/** `dir` and each directory above it, nearest first. */
function upFrom(dir: string): string[] {
  const dirs = [dir];
  while (dirname(dirs[dirs.length - 1]!) !== dirs[dirs.length - 1]) dirs.push(dirname(dirs[dirs.length - 1]!));
  return dirs;
}

/**
 * The compiler: the farm's own project's (its node_modules/.bin/tsc, nearest first), else
 * the one beside Shoal (a checkout's dev dependency). An installed Shoal brings none.
 */
function findTsc(scriptDir: string): string | undefined {
  return [...upFrom(scriptDir), ROOT].map((d) => join(d, 'node_modules/.bin/tsc')).find((p) => existsSync(p));
}

/** Where @types/node is for the script: its project's, else Shoal's (the generated tsconfig sits in a temp dir). */
function nodeTypeRoots(scriptDir: string): string[] {
  const found = [...upFrom(scriptDir), ROOT].map((d) => join(d, 'node_modules/@types')).find((p) => existsSync(join(p, 'node')));
  return found === undefined ? [] : [found];
}

/** Type-checks `file` (and what it imports) with `tsc --noEmit` (see findTsc). */
export async function typeCheckFarm(file: string, options: { tsc?: string } = {}): Promise<TypeCheckResult> {
  const script = resolve(file);
  if (!existsSync(script)) throw new ShoalError('not-found', `farm script ${file}: no such file`, { field: 'file' });
  const tsc = options.tsc ?? findTsc(dirname(script));
  if (tsc === undefined || !existsSync(tsc)) {
    throw new ShoalError('unavailable', `the TypeScript compiler is not installed${tsc === undefined ? '' : ` at ${tsc}`}: shoal apply type-checks the farm first; \`npm install -D typescript @types/node\` in the farm's project`, { field: 'tsc' });
  }
  const typeRoots = nodeTypeRoots(dirname(script));
  // Without @types/node the script still checks, only its node: imports do not resolve.
  const compilerOptions = { ...FARM_COMPILER_OPTIONS, typeRoots, types: typeRoots.length > 0 ? ['node'] : [] };
  const dir = await mkdtemp(join(tmpdir(), 'shoal-farm-tsc-'));
  try {
    const config = join(dir, 'tsconfig.json');
    await writeFile(config, JSON.stringify({ compilerOptions, files: [script] }, null, 2));
    return await new Promise<TypeCheckResult>((done, fail) => {
      execFile(tsc, ['-p', config, '--noEmit'], { cwd: dirname(script), maxBuffer: 16 << 20, timeout: 120_000 }, (err, stdout, stderr) => {
        const text = `${stdout}${stderr}`.trim();
        if (err === null) return done({ ok: true, diagnostics: '' });
        if (typeof err.code === 'number' && text !== '') return done({ ok: false, diagnostics: text });
        fail(new ShoalError('internal', `tsc failed to run: ${err.message}`, { detail: text }));
      });
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
