import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { isAlive, readProcStat, readStatusField, signalName, watchExit, within } from '../../../../src/host/drivers/shared/proc.ts';

describe('proc helpers', () => {
  it('reads our own stat and status', async () => {
    const st = await readProcStat(process.pid);
    assert.ok(st);
    assert.equal(st.ppid, process.ppid);
    assert.ok(st.startTime > 0);
    assert.ok(Number(await readStatusField(process.pid, 'Threads')) >= 1);
    assert.equal(await readProcStat(2 ** 22 + 1), undefined);
  });

  it('tells a live process from a gone or reused pid', async () => {
    const st = await readProcStat(process.pid);
    assert.equal(await isAlive(process.pid, st?.startTime), true);
    assert.equal(await isAlive(process.pid, (st?.startTime ?? 0) + 1), false);
  });

  it('notices when a process goes', async () => {
    const child = spawn('sleep', ['0.1']);
    const start = (await readProcStat(child.pid as number))?.startTime;
    const gone = new Promise<'gone'>((r) => watchExit(child.pid as number, start, () => r('gone'), 20));
    assert.equal(await within(gone, 2000), 'gone');
    assert.equal(await isAlive(child.pid as number, start), false);
  });

  it('names signals', () => {
    assert.equal(signalName(9), 'SIGKILL');
    assert.equal(signalName(15), 'SIGTERM');
    assert.equal(signalName(999), undefined);
  });
});
