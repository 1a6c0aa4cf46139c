// The page's files (src/dashboard/assets.ts): a checkout without a build gets one on first
// use, bundled from npm packages only (no http(s) URL is loaded by the page); the build
// is stamped with its sources' hash, so a second source reads it as it is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAssetSource } from '../../src/dashboard/index.ts';

test('built on first use into a fresh dir, then found there', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const first = createAssetSource({ dir });
  const js = await first.get('app.js');
  assert.ok(js && js.body.length > 20_000, 'a bundle');
  assert.match(js.type, /javascript/);
  assert.equal((await first.get('index.html'))?.type, 'text/html; charset=utf-8');
  assert.ok((await first.get('app.css'))!.body.length > 1000);
  assert.equal(await first.get('nope.js'), undefined);
  const html = (await first.get('index.html'))!.body.toString();
  assert.doesNotMatch(html, /(src|href)="https?:/, 'nothing loaded from elsewhere');
  const stamp = JSON.parse(await readFile(join(dir, 'build.json'), 'utf8')) as { sources: string };
  assert.match(stamp.sources, /^[0-9a-f]{64}$/);
  const built = (await stat(join(dir, 'app.js'))).mtimeMs;
  const second = createAssetSource({ dir });
  assert.equal((await second.get('app.js'))?.etag, js.etag);
  assert.equal((await stat(join(dir, 'app.js'))).mtimeMs, built, 'not rebuilt');
});
