// Live-state refusals and the quiesce bracket, with test doubles for the instance store.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { forkInstance, snapshotInstance, type LiveStateDeps } from '../../../src/host/instances/live-state.ts';
import type { LiveInstance } from '../../../src/host/instances/instance-store.ts';
import { isShoalError } from '../../../src/protocol/index.ts';

function live(running: object, stateDir: string, driver: object = { name: 'process' }): LiveInstance {
  return {
    record: { id: 'i1', state: 'ready', plan: { image: 'counter@sha256:' + 'a'.repeat(64), store: 'http://127.0.0.1:1', service: { name: 'c', version: '1' } } },
    driver,
    running,
    paths: { stateDir },
  } as unknown as LiveInstance;
}

describe('live state on the host', () => {
  it('refuses a snapshot or fork of an instance whose driver cannot capture, with reason not-supported', async () => {
    const deps: LiveStateDeps = {
      store: { get: () => live({ id: 'i1' }, '/nonexistent') },
      states: undefined,
      quiesce: async () => () => {},
      deploy: async () => assert.fail('no deploy'),
    };
    for (const op of [snapshotInstance, forkInstance]) {
      await assert.rejects(op(deps, 'i1'), (e: unknown) => isShoalError(e) && e.code === 'unsupported' && (e.detail as { reason: string }).reason === 'not-supported');
    }
  });

  it('captures between quiesce and release, and pushes after letting messages go', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-ls-'));
    const steps: string[] = [];
    try {
      const running = {
        id: 'i1',
        async capture(d: string) {
          steps.push('capture');
          const file = join(d, 'state');
          await writeFile(file, 'x');
          return { mediaType: 'application/x', file, annotations: { 'dev.shoal.driver': 'wasm' } };
        },
      };
      const deps: LiveStateDeps = {
        store: { get: () => live(running, dir, { name: 'wasm' }) },
        states: {
          async push() {
            steps.push('push');
            return { digest: `sha256:${'b'.repeat(64)}`, size: 1 };
          },
        },
        quiesce: async () => {
          steps.push('quiesce');
          return () => steps.push('release');
        },
        deploy: async () => assert.fail('no deploy'),
      };
      const r = await snapshotInstance(deps, 'i1');
      assert.equal(r.digest, `sha256:${'b'.repeat(64)}`);
      assert.deepEqual(steps, ['quiesce', 'capture', 'release', 'push']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
