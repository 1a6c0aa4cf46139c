// followLog: the tail, then what is appended, and the end when the log goes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { followLog } from '../../../src/host/instances/instance-log.ts';

test('follows an instance log from its tail until the file is removed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lf-'));
  try {
    const file = join(dir, 'log');
    await writeFile(file, 'one\ntwo\nthree\n');
    const stop = new AbortController();
    const seen: string[] = [];
    const it = followLog(file, 2, stop.signal, 20)[Symbol.asyncIterator]();
    seen.push((await it.next()).value as string);
    assert.deepEqual(seen, ['two\nthree\n']);
    await appendFile(file, 'four\n');
    assert.equal((await it.next()).value, 'four\n');
    await rm(file);
    assert.equal((await it.next()).done, true, 'ends when the instance (and its log) is gone');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('stops when its signal aborts', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lf-'));
  try {
    const file = join(dir, 'log');
    await writeFile(file, '');
    const stop = new AbortController();
    const it = followLog(file, 10, stop.signal, 10_000)[Symbol.asyncIterator]();
    const next = it.next();
    stop.abort();
    assert.equal((await next).done, true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
