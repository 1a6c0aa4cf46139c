import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArchiveChecker, containedSymlinkTarget, defaultUnpackLimits, resolveSymlinkTarget, symlinkClimbs } from '../../src/image/tar-safety.ts';

test('symlink targets: resolved inside the root, rewritten only when they climb', () => {
  const table: Array<[link: string, target: string, resolved: string, climbs: boolean, written: string]> = [
    ['usr/lib/rel', '../../etc/passwd', 'etc/passwd', false, '../../etc/passwd'],
    ['ok/a', '../../etc', 'etc', true, '../etc'],
    ['a', '../../../..', '', true, '.'],
    ['d/e/f', '../../../../d/x', 'd/x', true, '../x'],
    ['abs', '/../etc', 'etc', true, '/etc'],
    ['abs2', '/usr/lib', 'usr/lib', false, '/usr/lib'],
  ];
  for (const [link, target, resolved, climbs, written] of table) {
    assert.equal(resolveSymlinkTarget(link, target), resolved, `${link} -> ${target}`);
    assert.equal(symlinkClimbs(link, target), climbs, `${link} -> ${target}`);
    assert.equal(containedSymlinkTarget(link, target), written, `${link} -> ${target}`);
  }
});

test('the checker: fifos and devices are entries; hardlinks reach files, symlinks and special files only', () => {
  const c = new ArchiveChecker(defaultUnpackLimits);
  assert.equal(c.check({ name: 'dev/null', type: 'character-device' }).kind, 'device');
  assert.equal(c.check({ name: 'p', type: 'fifo' }).kind, 'fifo');
  assert.equal(c.check({ name: 's', type: 'symlink', linkname: '../../up' }).linkname, 'up');
  assert.equal(c.check({ name: 'h1', type: 'link', linkname: 's' }).kind, 'hardlink');
  assert.equal(c.check({ name: 'h2', type: 'link', linkname: 'p' }).kind, 'hardlink');
  assert.throws(() => c.check({ name: 'h3', type: 'link', linkname: 'dev' }), /not an earlier regular file, symlink or special file/);
  assert.throws(() => c.check({ name: 'h1/x', type: 'file' }), /symlink "h1"/);
  assert.throws(() => c.check({ name: 'p/x', type: 'file' }), /parent "p" is not a directory/);
});
