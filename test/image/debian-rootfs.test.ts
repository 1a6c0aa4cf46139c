import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isShoalError } from '../../src/protocol/errors.ts';
import {
  aptInstallInto,
  aptMirror,
  debootstrapRootfs,
  mountsUnder,
  parseAptSources,
} from '../../src/image/templates/debian-rootfs.ts';

const DEB822 = `Types: deb
# a comment inside a stanza
URIs: http://archive.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example.org/debian-security
Suites: bookworm-security
Components: main
`;

const cases: { name: string; text: string; format: 'deb822' | 'list'; suite: string; want: string | undefined }[] = [
  { name: 'deb822 main suite', text: DEB822, format: 'deb822', suite: 'bookworm', want: 'http://archive.example.org/debian' },
  { name: 'deb822 security suite matched exactly', text: DEB822, format: 'deb822', suite: 'bookworm-security', want: 'http://archive.example.org/debian-security' },
  { name: 'deb822 unknown suite', text: DEB822, format: 'deb822', suite: 'trixie', want: undefined },
  {
    name: 'deb822 skips disabled and deb-src stanzas',
    text: 'Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\nTypes: deb deb-src\nURIs: https://on.example/debian/\nSuites: bookworm\n',
    format: 'deb822',
    suite: 'bookworm',
    want: 'https://on.example/debian',
  },
  {
    name: 'deb822 continuation lines and unusable transports',
    text: 'Types: deb\nURIs: cdrom:[Debian]/\n  http://cont.example/debian\nSuites: trixie\n  bookworm\n',
    format: 'deb822',
    suite: 'bookworm',
    want: 'http://cont.example/debian',
  },
  { name: 'deb822 field names are case-insensitive', text: 'types: deb\nuris: http://lower.example/debian\nsuites: bookworm\n', format: 'deb822', suite: 'bookworm', want: 'http://lower.example/debian' },
  {
    name: 'list plain line',
    text: '# comment\ndeb http://list.example/debian bookworm main contrib\n',
    format: 'list',
    suite: 'bookworm',
    want: 'http://list.example/debian',
  },
  {
    name: 'list with options, security first',
    text: 'deb [signed-by=/k.gpg arch=amd64] http://list.example/debian-security bookworm-security main\ndeb [arch=amd64] http://list.example/debian bookworm main # trailing\n',
    format: 'list',
    suite: 'bookworm',
    want: 'http://list.example/debian',
  },
  { name: 'list ignores deb-src and comments', text: 'deb-src http://src.example/debian bookworm main\n#deb http://old.example/debian bookworm main\n', format: 'list', suite: 'bookworm', want: undefined },
  { name: 'list file: archive', text: 'deb file:///srv/mirror/ bookworm main\n', format: 'list', suite: 'bookworm', want: 'file:///srv/mirror' },
  { name: 'empty text', text: '', format: 'list', suite: 'bookworm', want: undefined },
];

describe('parseAptSources', () => {
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(parseAptSources(c.text, c.format, c.suite), c.want);
    });
  }
});

describe('aptMirror', () => {
  const withAptDir = async (fn: (dir: string) => Promise<void>): Promise<void> => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-apt-'));
    try {
      await mkdir(join(dir, 'sources.list.d'));
      await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };

  it('prefers deb822 files, then .list files, then sources.list', async () => {
    await withAptDir(async (dir) => {
      await writeFile(join(dir, 'sources.list'), 'deb http://one-line.example/debian bookworm main\n');
      assert.equal(await aptMirror({ aptDir: dir }), 'http://one-line.example/debian');
      await writeFile(join(dir, 'sources.list.d', 'extra.list'), 'deb http://parts-list.example/debian bookworm main\n');
      assert.equal(await aptMirror({ aptDir: dir }), 'http://parts-list.example/debian');
      await writeFile(join(dir, 'sources.list.d', 'debian.sources'), DEB822);
      assert.equal(await aptMirror({ aptDir: dir }), 'http://archive.example.org/debian');
      // A disabled copy (not *.sources / *.list) is not read.
      await writeFile(join(dir, 'sources.list.d', 'a.sources.disabled'), 'Types: deb\nURIs: http://disabled.example/d\nSuites: bookworm\n');
      assert.equal(await aptMirror({ aptDir: dir }), 'http://archive.example.org/debian');
    });
  });

  it('throws unavailable, naming the suite, when no source lists it', async () => {
    await withAptDir(async (dir) => {
      await writeFile(join(dir, 'sources.list.d', 'debian.sources'), DEB822);
      await assert.rejects(aptMirror({ aptDir: dir, suite: 'trixie' }), (e: unknown) => {
        assert.ok(isShoalError(e));
        assert.equal(e.code, 'unavailable');
        assert.match(e.message, /trixie/);
        return true;
      });
    });
  });

  it('finds an http(s) archive for bookworm on this machine', { skip: process.platform !== 'linux' && 'not Linux' }, async (t) => {
    try {
      assert.match(await aptMirror(), /^(https?|file):/);
    } catch (e) {
      if (process.env.CI === 'true') throw e;
      t.skip(`this machine's apt has no bookworm source: ${(e as Error).message}`);
    }
  });
});

describe('debootstrapRootfs and aptInstallInto refuse bad input before touching anything', () => {
  it('refuses a non-empty root', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-debian-'));
    try {
      await writeFile(join(dir, 'keep-me'), 'x');
      await assert.rejects(debootstrapRootfs(dir, { mirror: 'file:///nonexistent' }), (e: unknown) => {
        assert.ok(isShoalError(e));
        assert.equal(e.code, 'conflict');
        assert.equal(e.field, 'root');
        return true;
      });
      assert.deepEqual(await readdir(dir), ['keep-me']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('removes the partial tree and reports the last lines when debootstrap fails', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-debian-'));
    const root = join(dir, 'root');
    const lines: string[] = [];
    try {
      await assert.rejects(
        debootstrapRootfs(root, { mirror: `file://${dir}/no-archive-here`, log: (l) => lines.push(l) }),
        (e: unknown) => {
          assert.ok(isShoalError(e));
          assert.match(e.message, /debootstrap|cannot run/);
          return true;
        },
      );
      await assert.rejects(access(root), 'the partial tree is removed');
      assert.deepEqual(await mountsUnder(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses package names that could be read as options, and trees without apt', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-debian-'));
    try {
      await assert.rejects(aptInstallInto(dir, ['nginx-light', '-oAPT::Get::X=1']), (e: unknown) => {
        assert.ok(isShoalError(e));
        assert.equal(e.code, 'invalid');
        assert.equal(e.field, 'packages[1]');
        return true;
      });
      await assert.rejects(aptInstallInto(dir, []), { code: 'invalid', field: 'packages' });
      await assert.rejects(aptInstallInto(dir, ['nginx-light']), { code: 'invalid', field: 'root' });
      assert.deepEqual(await mountsUnder(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a real Debian tree (SHOAL_TEST_DEBIAN=1)', () => {
  it('debootstraps bookworm minbase, then installs nginx-light into it', async (t) => {
    if (process.env.SHOAL_TEST_DEBIAN !== '1') {
      t.skip('debootstrap downloads ~30 MB and takes a minute or more; set SHOAL_TEST_DEBIAN=1 to run it');
      return;
    }
    assert.equal(process.getuid?.(), 0, 'debootstrap and chroot need root');
    const dir = await mkdtemp(join(tmpdir(), 'shoal-debian-'));
    const root = join(dir, 'root');
    try {
      const lines: string[] = [];
      const started = performance.now();
      const info = await debootstrapRootfs(root, { log: (l) => lines.push(l) });
      const seconds = (performance.now() - started) / 1000;
      t.diagnostic(`debootstrap ${info.suite}: ${seconds.toFixed(1)} s, ${(info.bytes / 1e6).toFixed(1)} MB in ${info.files} entries`);
      assert.equal(info.suite, 'bookworm');
      assert.ok(lines.some((l) => l.startsWith('I: ')), 'debootstrap output is streamed to log');
      assert.ok(info.bytes > 50e6 && info.files > 1000);
      await access(join(root, 'etc/debian_version'));
      await access(join(root, 'usr/bin/apt-get'));
      await access(join(root, 'run/shoal'));
      await access(join(root, 'app'));
      assert.deepEqual(
        (await readdir(join(root, 'var/cache/apt/archives'))).filter((f) => f.endsWith('.deb')),
        [],
      );
      assert.deepEqual(await readdir(join(root, 'var/lib/apt/lists')), ['partial']);
      assert.deepEqual(await readdir(join(root, 'dev')), [], 'no device nodes in a template');

      await aptInstallInto(root, ['nginx-light']);
      await access(join(root, 'usr/sbin/nginx'));
      await assert.rejects(access(join(root, 'usr/sbin/policy-rc.d')), 'policy-rc.d is removed');
      assert.deepEqual(await mountsUnder(root), []);
      assert.deepEqual(
        (await readdir(join(root, 'var/cache/apt/archives'))).filter((f) => f.endsWith('.deb')),
        [],
      );
    } finally {
      assert.deepEqual(await mountsUnder(dir), []);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
