// The image resolver's cache: fresh entries are reused, older ones are served while a
// refresh runs, stale ones are resolved again first, failures are not cached, and a
// failed background refresh keeps the old value (and is logged).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createImageResolver } from '../../src/image/index.ts';
import type { RegistryClient, RemoteImage } from '../../src/image/index.ts';

function image(digest: string): RemoteImage {
  return { repository: 'echo', manifestDigest: digest, configDigest: 'sha256:c', layers: [], process: { args: [], env: [], cwd: '/', user: undefined } };
}

/** A resolver over a scripted store: each call takes the next answer (a digest, or an Error). */
function setup(answers: Array<string | Error>) {
  let clock = 1000;
  const calls: string[] = [];
  const warnings: object[] = [];
  const pending: Array<() => void> = [];
  let hold = false;
  const resolver = createImageResolver({
    client: () => ({ baseUrl: 'http://store' }) as RegistryClient,
    refreshAfterMs: 100,
    maxStaleMs: 1000,
    now: () => clock,
    log: { warn: (o) => warnings.push(o) },
    resolveWith: (client, ref) => {
      assert.equal(client.baseUrl, 'http://store');
      calls.push(ref);
      const answer = answers.shift() ?? new Error('no more answers');
      const settle = (resolve: (v: RemoteImage) => void, reject: (e: Error) => void) => (answer instanceof Error ? reject(answer) : resolve(image(answer)));
      return new Promise((resolve, reject) => (hold ? pending.push(() => settle(resolve, reject)) : settle(resolve, reject)));
    },
  });
  return {
    resolver,
    calls,
    warnings,
    advance: (ms: number) => (clock += ms),
    holdAnswers: (on: boolean) => (hold = on),
    releaseAnswers: () => pending.splice(0).forEach((f) => f()),
  };
}

const flush = () => new Promise<void>((r) => setImmediate(r));

test('concurrent first resolutions share one request; a fresh entry is reused', async () => {
  const s = setup(['sha256:a']);
  s.holdAnswers(true);
  const both = Promise.all([s.resolver.resolve('echo:1'), s.resolver.resolve('echo:1')]);
  s.releaseAnswers();
  const [x, y] = await both;
  assert.equal(x.manifestDigest, 'sha256:a');
  assert.equal(y, x);
  s.advance(50);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a');
  assert.deepEqual(s.calls, ['echo:1']);
});

test('an older entry is served at once while one background refresh replaces it', async () => {
  const s = setup(['sha256:a', 'sha256:b']);
  await s.resolver.resolve('echo:1');
  s.advance(200);
  s.holdAnswers(true);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a', 'the old value, without waiting');
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a');
  assert.deepEqual(s.calls, ['echo:1', 'echo:1'], 'one refresh, not one per call');
  s.releaseAnswers();
  await flush();
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:b');
});

test('a stale entry is resolved again before use', async () => {
  const s = setup(['sha256:a', 'sha256:b']);
  await s.resolver.resolve('echo:1');
  s.advance(1000);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:b');
});

test('a failed resolution is not cached: the next call asks again', async () => {
  const s = setup([new Error('store down'), 'sha256:a']);
  await assert.rejects(s.resolver.resolve('echo:1'), /store down/);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a');
  assert.equal(s.calls.length, 2);
});

test('a failed background refresh keeps the old value, is logged, and is tried again later', async () => {
  const s = setup(['sha256:a', new Error('store down'), 'sha256:c']);
  await s.resolver.resolve('echo:1');
  s.advance(200);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a');
  await flush();
  assert.deepEqual(s.warnings, [{ image: 'echo:1', err: 'store down' }]);
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:a');
  await flush();
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:c');
  assert.equal(s.calls.length, 3);
});

test('forget drops the entry: the next call resolves afresh', async () => {
  const s = setup(['sha256:a', 'sha256:b']);
  await s.resolver.resolve('echo:1');
  s.resolver.forget('echo:1');
  assert.equal((await s.resolver.resolve('echo:1')).manifestDigest, 'sha256:b');
});

test('a digest-pinned reference is resolved once and never refreshed, however old', async () => {
  const ref = `echo@sha256:${'1'.repeat(64)}`;
  const s = setup(['sha256:a', 'sha256:b']);
  assert.equal((await s.resolver.resolve(ref)).manifestDigest, 'sha256:a');
  s.advance(5000); // past maxStaleMs
  assert.equal((await s.resolver.resolve(ref)).manifestDigest, 'sha256:a');
  assert.deepEqual(s.calls, [ref]);
});

test('bounded: past max the oldest resolution goes', async () => {
  const calls: string[] = [];
  const resolver = createImageResolver({
    client: { baseUrl: 'http://store' } as RegistryClient,
    refreshAfterMs: 100,
    maxStaleMs: 1000,
    max: 2,
    resolveWith: async (_client, ref) => {
      calls.push(ref);
      return image(`sha256:${ref.length}`);
    },
  });
  const pinned = (n: number) => `echo@sha256:${String(n).padStart(64, '0')}`;
  for (const n of [1, 2, 3]) await resolver.resolve(pinned(n));
  await resolver.resolve(pinned(3));
  await resolver.resolve(pinned(2));
  await resolver.resolve(pinned(1));
  assert.deepEqual(calls, [pinned(1), pinned(2), pinned(3), pinned(1)]);
});
