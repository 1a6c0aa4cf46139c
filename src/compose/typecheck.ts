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

/** Type-checks `file` (and what it imports) with `node_modules/.bin/tsc --noEmit`. */
export async function typeCheckFarm(file: string, options: { tsc?: string } = {}): Promise<TypeCheckResult> {
  const script = resolve(file);
  if (!existsSync(script)) throw new ShoalError('not-found', `farm script ${file}: no such file`, { field: 'file' });
  const tsc = options.tsc ?? join(ROOT, 'node_modules/.bin/tsc');
  if (!existsSync(tsc)) throw new ShoalError('unavailable', `the TypeScript compiler is not installed at ${tsc}`, { field: 'tsc' });
  const dir = await mkdtemp(join(tmpdir(), 'shoal-farm-tsc-'));
  try {
    const config = join(dir, 'tsconfig.json');
    await writeFile(config, JSON.stringify({ compilerOptions: FARM_COMPILER_OPTIONS, files: [script] }, null, 2));
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
