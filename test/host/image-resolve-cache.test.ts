import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPinnedResolveCache } from '../../src/host/image-resolve-cache.ts';
import type { RemoteImage } from '../../src/image/index.ts';

const pinned = (n: number) => `echo@sha256:${String(n).padStart(64, '0')}`;
const image = (ref: string): RemoteImage => ({ repository: 'echo', manifestDigest: `m-${ref}`, configDigest: 'c', layers: [], process: { args: [], env: [], cwd: '/', user: undefined } }) as RemoteImage;

function setup(max?: number) {
  const asked: string[] = [];
  let fail = false;
  const cache = createPinnedResolveCache({
    resolveWith: async (ref) => {
      asked.push(ref);
      if (fail) throw new Error('store down');
      return image(ref);
    },
    ...(max === undefined ? {} : { max }),
  });
  return { cache, asked, failNext: (v: boolean) => (fail = v) };
}

test('a digest-pinned reference is resolved once; a tag every time', async () => {
  const s = setup();
  const a = await s.cache.resolve(pinned(1));
  assert.equal(await s.cache.resolve(pinned(1)), a);
  await s.cache.resolve('echo:1');
  await s.cache.resolve('echo:1');
  assert.deepEqual(s.asked, [pinned(1), 'echo:1', 'echo:1']);
});

test('a failure is passed on and not kept', async () => {
  const s = setup();
  s.failNext(true);
  await assert.rejects(s.cache.resolve(pinned(1)), /store down/);
  s.failNext(false);
  assert.equal((await s.cache.resolve(pinned(1))).manifestDigest, `m-${pinned(1)}`);
  assert.equal(s.asked.length, 2);
});

test('bounded: past max the oldest resolution goes', async () => {
  const s = setup(2);
  for (const n of [1, 2, 3]) await s.cache.resolve(pinned(n));
  await s.cache.resolve(pinned(3));
  await s.cache.resolve(pinned(2));
  await s.cache.resolve(pinned(1));
  assert.deepEqual(s.asked, [pinned(1), pinned(2), pinned(3), pinned(1)]);
});
