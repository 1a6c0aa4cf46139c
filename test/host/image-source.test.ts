import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStoreImageSource } from '../../src/host/image-source.ts';
import type { RegistryClient, RemoteImage } from '../../src/image/index.ts';
import { ShoalError } from '../../src/protocol/errors.ts';

const remote = { repository: 'team/echo', manifestDigest: 'sha256:mm', configDigest: 'sha256:cc', layers: [{ digest: 'sha256:l1', diffId: 'sha256:d1', size: 42, mediaType: 'x' }], process: { args: ['/a'], env: [], cwd: '/', user: undefined } } as RemoteImage;

function setup(resolve: (ref: string) => Promise<RemoteImage>) {
  const clients: string[] = [];
  const downloads: Array<{ repo: string; digest: string; dest: string; expectedSize: number | undefined }> = [];
  const pulled: Array<[number, number]> = [];
  const source = createStoreImageSource({
    userAgent: 'test',
    onPulled: (b, n) => void pulled.push([b, n]),
    clientFor: (store) => {
      clients.push(store);
      return {
        async downloadBlob(repo: string, digest: string, dest: string, o: { onBytes?: (n: number) => void; expectedSize?: number }) {
          downloads.push({ repo, digest, dest, expectedSize: o.expectedSize });
          o.onBytes?.(40);
          o.onBytes?.(2);
          return { size: 42 };
        },
      } as unknown as RegistryClient;
    },
    resolverFor: () => ({ resolve }),
  });
  return { source, clients, downloads, pulled };
}

test('one client per store; layers fetched from the image repository with their expected size, and counted', async () => {
  const s = setup(async () => remote);
  const a = await s.source.resolve('http://s1', 'echo:1');
  await s.source.resolve('http://s1', 'echo:2');
  await s.source.resolve('http://s2', 'echo:1');
  assert.deepEqual(s.clients, ['http://s1', 'http://s2']);
  assert.equal(a.rootfs, remote);
  const seen: number[] = [];
  await a.fetchBlob('sha256:l1', '/tmp/x', (n) => seen.push(n));
  assert.deepEqual(s.downloads, [{ repo: 'team/echo', digest: 'sha256:l1', dest: '/tmp/x', expectedSize: 42 }]);
  assert.deepEqual(seen, [40, 2]);
  assert.deepEqual(s.pulled, [[40, 0], [2, 0], [0, 1]]);
  await a.fetchBlob('sha256:other', '/tmp/y', () => {});
  assert.equal(s.downloads[1]?.expectedSize, undefined);
});

test('a store that does not answer is unavailable naming the store field; its own errors pass as they are', async () => {
  const down = setup(async () => Promise.reject(new Error('ECONNREFUSED')));
  await assert.rejects(down.source.resolve('http://s1', 'echo:1'), (e: any) => e.code === 'unavailable' && e.field === 'store' && /http:\/\/s1 did not answer: ECONNREFUSED/.test(e.message));
  const missing = setup(async () => Promise.reject(new ShoalError('not-found', 'no image echo:9')));
  await assert.rejects(missing.source.resolve('http://s1', 'echo:9'), (e: any) => e.code === 'not-found' && e.message === 'no image echo:9');
});
