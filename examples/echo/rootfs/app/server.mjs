// The echo service: the smallest program that follows the Shoal instance contract
// (HTTP on the Unix socket in $SHOAL_LISTEN, GET /healthz, POST /<Operation> with JSON),
// plus operations the host agent's tests use to crash, exhaust and probe an instance.
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { dirname } from 'node:path';

const listen = process.env.SHOAL_LISTEN || '/run/shoal/app.sock';
const held = []; // Hog's allocations, kept reachable so they are never collected

class Invalid extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

const need = (body, field, type, check = () => true) => {
  const v = body !== null && typeof body === 'object' && !Array.isArray(body) ? body[field] : undefined;
  if (typeof v !== type || !check(v)) throw new Invalid(field, `'${field}' must be ${type === 'number' ? 'a number in range' : `a ${type}`}`);
  return v;
};
const count = (read) => { try { return read(); } catch { return []; } };

const operations = {
  Echo: (body) => (need(body, 'message', 'string'), body),
  Inspect: () => ({
    pid: process.pid,
    hostname: hostname(),
    uid: process.getuid(),
    interfaces: [...new Set([...Object.keys(networkInterfaces()), ...count(() => readdirSync('/sys/class/net'))])].sort(),
    processes: count(() => readdirSync('/proc')).filter((d) => /^\d+$/.test(d)).length,
  }),
  Crash: (body) => {
    const code = need(body, 'code', 'number', (c) => Number.isInteger(c) && c >= 0 && c <= 255);
    setTimeout(() => process.exit(code), 10);
    return {};
  },
  Hog: (body) => {
    const mb = need(body, 'mb', 'number', (m) => m > 0);
    let got = 0;
    const timer = setInterval(() => {
      if (got >= mb) return clearInterval(timer);
      held.push(Buffer.allocUnsafe(16 << 20).fill(1)); // filled, so the pages are really used
      got += 16;
    }, 10);
    return { mb };
  },
  Spawn: async (body) => {
    const n = need(body, 'count', 'number', (c) => Number.isInteger(c) && c >= 0 && c <= 1000);
    const children = [];
    const errors = new Set();
    await Promise.all(Array.from({ length: n }, () => new Promise((done) => {
      try {
        const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1e9)'], { stdio: 'ignore' });
        child.once('spawn', () => { children.push(child); done(); });
        child.once('error', (e) => { errors.add(e.code || e.message); done(); });
      } catch (e) {
        errors.add(e.code || e.message);
        done();
      }
    })));
    await new Promise((r) => setTimeout(r, 200)); // a child that could not start its threads dies here
    const spawned = children.filter((c) => c.exitCode === null && c.signalCode === null).length;
    for (const c of children) c.kill('SIGKILL');
    return { spawned, ...(errors.size > 0 ? { errors: [...errors] } : {}) };
  },
  // Stops accepting (closes its listener) while the process lives on: a hung service, as the host's liveness probe sees it.
  Deafen: () => {
    setInterval(() => {}, 1 << 30);
    setTimeout(() => server.close(), 10);
    setTimeout(() => server.closeAllConnections(), 200); // kept-alive connections too
    return {};
  },
  Connect: (body) => {
    const host = need(body, 'host', 'string');
    const port = need(body, 'port', 'number', (p) => Number.isInteger(p) && p > 0 && p < 65536);
    return new Promise((resolve) => {
      const socket = connect({ host, port, timeout: 1000 });
      const end = (reply) => { socket.destroy(); resolve(reply); };
      socket.once('connect', () => end({ connected: true }));
      socket.once('timeout', () => end({ connected: false, error: 'timeout' }));
      socket.once('error', (e) => end({ connected: false, error: e.code || e.message }));
    });
  },
};

const reply = (res, status, value) => {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
};
const error = (res, status, code, message, field) =>
  reply(res, status, { error: { code, message, ...(field === undefined ? {} : { field }) } });

const readBody = (req) => new Promise((resolve, reject) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 1 << 20) reject(new Invalid(undefined, 'body is larger than 1 MiB'));
    else chunks.push(c);
  });
  req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  req.on('error', reject);
});

const server = createServer(async (req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (req.method === 'GET' && path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    return res.end('ok');
  }
  const name = path.slice(1);
  const op = req.method === 'POST' && Object.hasOwn(operations, name) ? operations[name] : undefined;
  if (op === undefined) return error(res, 404, 'not-found', `no operation ${req.method} ${path}`);
  try {
    const text = await readBody(req);
    let body;
    try { body = text === '' ? {} : JSON.parse(text); } catch { throw new Invalid(undefined, 'body is not JSON'); }
    reply(res, 200, await op(body));
  } catch (e) {
    if (e instanceof Invalid) error(res, 400, 'invalid', e.message, e.field);
    else error(res, 500, 'internal', String(e && e.message));
  }
});

if (Number(process.env.LISTEN_FDS) >= 1) {
  // The host made the socket and passed it as fd 3 (socket activation).
  server.listen({ fd: 3 }, () => console.log('echo: listening on the inherited socket (fd 3)'));
} else {
  mkdirSync(dirname(listen), { recursive: true });
  rmSync(listen, { force: true }); // a socket left by an earlier run would make listen fail
  server.listen(listen, () => {
    chmodSync(listen, 0o666);
    console.log(`echo: listening on ${listen}`);
  });
}

const stop = () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
