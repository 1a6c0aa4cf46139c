// The vm driver's live-migration parts that need no VM: the facts a source checks, and the
// key file (written into a directory the user QEMU runs as owns: never through a link).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, lstat, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { checkFacts, makeKeyDir, MATCHING_FACTS, writeKey } from '../../../../src/host/drivers/vm/live.ts';
import { skipUnless } from '../../fixtures/requirements.ts';

describe('vm live migration parts', () => {
  it('refuses a target whose facts differ in any that a state depends on', () => {
    const facts = Object.fromEntries(MATCHING_FACTS.map((k) => [k, 'x']));
    checkFacts(facts, { ...facts, 'org.shoal.driver': 'other' }); // not one of them
    for (const k of MATCHING_FACTS) assert.throws(() => checkFacts(facts, { ...facts, [k]: 'y' }), (e: Error & { code?: string }) => e.code === 'conflict' && e.message.includes(k.replace('org.shoal.vm.', '')));
  });

  it('writes keys.psk as a new file, replacing a link someone put there without following it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-vm-key-'));
    try {
      const victim = join(dir, 'victim');
      await writeFile(victim, 'untouched');
      await symlink(victim, join(dir, 'keys.psk'));
      await writeKey(dir, 'ab'.repeat(32), { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
      assert.equal(await readFile(victim, 'utf8'), 'untouched');
      const st = await lstat(join(dir, 'keys.psk'));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o777, 0o440);
      assert.equal(await readFile(join(dir, 'keys.psk'), 'utf8'), `shoal:${'ab'.repeat(32)}\n`);
      await assert.rejects(writeKey(dir, 'not-hex', undefined), /64 hex digits/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps the key where only its own QEMU reaches it, and lets QEMU write nothing there', { skip: skipUnless(['root']) }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-vm-keydir-'));
    const nobody = { uid: 65534, gid: 65534 };
    try {
      await chmod(dir, 0o755); // as an instance's state dir: QEMU's user may pass through
      const keyDir = join(dir, 'keys', 'migration');
      await makeKeyDir(keyDir, nobody);
      await writeKey(keyDir, 'cd'.repeat(32), nobody);
      const parent = await stat(join(dir, 'keys'));
      assert.deepEqual([parent.uid, parent.mode & 0o777], [0, 0o700]);
      const own = await stat(keyDir);
      assert.deepEqual([own.uid, own.gid, own.mode & 0o777], [0, nobody.gid, 0o750]);
      const asNobody = (args: string[], fd?: number) =>
        spawnSync('/bin/sh', ['-c', ...args], { ...nobody, stdio: ['ignore', 'pipe', 'pipe', ...(fd === undefined ? [] : [fd])], encoding: 'utf8' });
      // Another process of QEMU's user, by path: refused at the 0700 parent.
      assert.notEqual(asNobody([`cat ${keyDir}/keys.psk`]).status, 0);
      // The QEMU that holds the directory as a descriptor reads the key through it…
      const handle = await open(keyDir, 'r');
      try {
        const read = asNobody(['cat /proc/self/fd/3/keys.psk'], handle.fd);
        assert.equal(read.stdout, `shoal:${'cd'.repeat(32)}\n`, read.stderr);
        // …and can neither add a file (a link for the agent to follow) nor remove the key.
        assert.notEqual(asNobody(['ln -s /etc/shadow /proc/self/fd/3/planted'], handle.fd).status, 0);
        assert.notEqual(asNobody(['rm -f /proc/self/fd/3/keys.psk'], handle.fd).status, 0);
      } finally {
        await handle.close();
      }
      await assert.rejects(lstat(join(keyDir, 'planted')));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
