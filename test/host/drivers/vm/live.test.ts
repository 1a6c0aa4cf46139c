// The vm driver's live-migration parts that need no VM: the facts a source checks, and the
// key file (written into a directory the user QEMU runs as owns: never through a link).
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { checkFacts, MATCHING_FACTS, writeKey } from '../../../../src/host/drivers/vm/live.ts';

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
      assert.equal(st.mode & 0o777, 0o400);
      assert.equal(await readFile(join(dir, 'keys.psk'), 'utf8'), `shoal:${'ab'.repeat(32)}\n`);
      await assert.rejects(writeKey(dir, 'not-hex', undefined), /64 hex digits/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
