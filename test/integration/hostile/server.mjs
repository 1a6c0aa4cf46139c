// The hostile instance: a Shoal service that, on request, tries the tricks an attacker
// inside an instance would (test/integration/hostile-instance.test.ts). Plain JavaScript
// with only node: imports, so it runs on the bare node template. It listens on the
// inherited socket (fd 3) when the host passes one, else binds $SHOAL_LISTEN.
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, closeSync, lstatSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { Worker } from 'node:worker_threads';

const listen = process.env.SHOAL_LISTEN || '/run/shoal/app.sock';
const imports = process.env.SHOAL_IMPORTS || '/run/shoal/imports';
const held = [];
const attempt = (fn) => {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return { ok: false, error: e.code ?? String(e) };
  }
};

const operations = {
  Echo: (body) => body,
  // Replace our own socket path with a symlink to `target` (a host path).
  SwapSocket: ({ target }) => ({
    rm: attempt(() => rmSync(listen, { force: true })),
    symlink: attempt(() => symlinkSync(target, listen)),
  }),
  // Replace the imports directory with a symlink to `target` (a host directory).
  SwapImports: ({ target }) => ({
    rm: attempt(() => rmSync(imports, { recursive: true, force: true })),
    symlink: attempt(() => symlinkSync(target, imports)),
  }),
  // Copy `source` to each of `dests` as a setuid-root program.
  Setuid: ({ source, dests }) =>
    Object.fromEntries(
      dests.map((d) => [
        d,
        attempt(() => {
          copyFileSync(source, d);
          chownSync(d, 0, 0);
          chmodSync(d, 0o4755);
          return lstatSync(d).mode & 0o7777;
        }),
      ]),
    ),
  // Write up to `mb` MiB of zeros to `path`; reports how far it got and the error that stopped it.
  Fill: ({ path, mb }) => {
    const chunk = Buffer.alloc(1024 * 1024);
    let written = 0;
    let fd;
    try {
      fd = openSync(path, 'w');
      for (let i = 0; i < mb; i++) written += writeSync(fd, chunk);
      return { written, error: null };
    } catch (e) {
      return { written, error: e.code ?? String(e) };
    } finally {
      if (fd !== undefined) attempt(() => closeSync(fd));
      if (path.startsWith('/dev/shm') || path.startsWith('/tmp') || path.startsWith('/run/shoal')) attempt(() => rmSync(path)); // RAM-backed: give it back
    }
  },
  // Writes `mb` MiB to stdout (the instance's log).
  Flood: ({ mb }) => {
    const line = Buffer.from(`${'x'.repeat(1023)}\n`);
    const block = Buffer.concat(Array.from({ length: 1024 }, () => line));
    let written = 0;
    for (let i = 0; i < mb; i++) {
      let off = 0;
      while (off < block.length) {
        try {
          off += writeSync(1, block, off);
        } catch (e) {
          if (e.code !== 'EAGAIN') return { written, error: e.code };
        }
      }
      written += block.length;
    }
    return { written, error: null };
  },
  // Runs a program baked into the image (the fork bomb, probes).
  Exec: ({ file, args }) =>
    new Promise((resolve) => {
      execFile(file, args ?? [], { timeout: 20_000 }, (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
    }),
  Hog: () => {
    setInterval(() => held.push(Buffer.alloc(16 * 1024 * 1024, 1)), 10);
    return { hogging: true };
  },
  // Busy threads for `ms`; returns once they are started.
  Spin: ({ threads, ms }) => {
    for (let i = 0; i < threads; i++) new Worker(`const end = Date.now() + ${ms}; while (Date.now() < end) {}`, { eval: true });
    return { spinning: threads };
  },
  Connect: ({ host, port }) =>
    new Promise((resolve) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => (s.destroy(), resolve({ error: 'timeout' })), 2000);
      s.on('connect', () => (clearTimeout(timer), s.destroy(), resolve({ connected: true })));
      s.on('error', (e) => (clearTimeout(timer), resolve({ error: e.code })));
    }),
  Read: ({ path }) => attempt(() => readFileSync(path, 'utf8').slice(0, 65536)),
  List: ({ path }) => attempt(() => readdirSync(path).sort()),
  Whoami: () => ({ uid: process.getuid(), gid: process.getgid(), uidMap: attempt(() => readFileSync('/proc/self/uid_map', 'utf8')) }),
};

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const reply = (status, body) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.url === '/healthz') return reply(200, { ok: true });
    const op = operations[req.url.slice(1)];
    if (req.method !== 'POST' || !op) return reply(404, { error: { code: 'not-found', message: req.url } });
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      reply(200, await op(text ? JSON.parse(text) : {}));
    } catch (e) {
      reply(500, { error: { code: 'internal', message: String(e) } });
    }
  });
});

if (Number(process.env.LISTEN_FDS) >= 1) server.listen({ fd: 3 });
else {
  rmSync(listen, { force: true });
  server.listen(listen, () => chmodSync(listen, 0o666));
}
process.on('SIGTERM', () => process.exit(0));
