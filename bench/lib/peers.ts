// Peers and process plumbing the load benchmarks share: nginx as the reference proxy,
// the load clients (a keep-alive Node client and wrk), child processes ended by the pid
// we started, free loopback ports.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, constants, readFile, writeFile } from 'node:fs/promises';
import { createServer as createNetServer, connect, type AddressInfo } from 'node:net';
import { request, type Agent, type RequestOptions } from 'node:http';
import { join } from 'node:path';
import type { createHistogram } from 'node:perf_hooks';
import { promisify } from 'node:util';

export const NGINX = '/usr/sbin/nginx';
export const WRK = '/usr/bin/wrk';

/** What one load run against one target gives. */
export interface LoadFigures {
  requests: number;
  errors: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU time (user + system) the measured process spent per request, in µs, when its pid was given. */
  cpuUsPerRequest?: number;
}

/** CPU time (user + system) a process has used so far, in ms (from /proc, 10 ms ticks). */
export async function cpuMsOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}
const TICKS_PER_SECOND = 100;

/**
 * `connections` keep-alive loops against `target` for `durationMs`: GET, or POST of
 * `body` as JSON when given. Latencies of 200 replies go into `histogram` (ns).
 */
export async function loadFor(
  target: RequestOptions,
  agent: Agent,
  connections: number,
  durationMs: number,
  histogram: ReturnType<typeof createHistogram> | undefined,
  body?: string,
): Promise<{ requests: number; errors: number }> {
  const options: RequestOptions =
    body === undefined
      ? { ...target, agent, method: 'GET' }
      : { ...target, agent, method: 'POST', headers: { ...(target.headers ?? {}), 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } };
  const end = performance.now() + durationMs;
  let requests = 0;
  let errors = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const t0 = process.hrtime.bigint();
      const req = request(options, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) {
            requests++;
            histogram?.record(process.hrtime.bigint() - t0);
          } else errors++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(body);
    });
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  return { requests, errors };
}

/** wrk against a TCP target (`script`: a Lua file, e.g. to POST a body); undefined if its output cannot be read. */
export async function runWrk(url: string, options: { token?: string | undefined; script?: string; connections: number; durationMs: number }): Promise<LoadFigures | undefined> {
  const { connections, durationMs } = options;
  const args = ['-t1', `-c${connections}`, `-d${Math.max(1, Math.round(durationMs / 1000))}s`, '--latency'];
  if (options.script !== undefined) args.push('-s', options.script);
  if (options.token !== undefined) args.push('-H', `x-shoal-route: ${options.token}`);
  args.push(url);
  const { stdout } = await promisify(execFile)(WRK, args, { timeout: durationMs + 30_000 });
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  const total = /(\d+) requests in/.exec(stdout);
  // wrk pads values in seconds and minutes with a trailing space ("1.52s "): without the
  // \s* a turn whose p99 reached a second was silently dropped, flattering the slow target.
  const p50 = /^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(stdout);
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(stdout);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout);
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(stdout);
  if (rps === null || p50 === null || p99 === null || total === null) return undefined;
  const ms = (m: RegExpExecArray): number => Number(m[1]) * (m[2] === 'us' ? 1e-3 : m[2] === 's' ? 1e3 : m[2] === 'm' ? 60e3 : 1);
  const errors = Number(non2xx?.[1] ?? 0) + (socketErrors === null ? 0 : socketErrors.slice(1).reduce((a, b) => a + Number(b), 0));
  return { requests: Number(total[1]), errors, rps: Number(rps[1]), p50Ms: ms(p50), p99Ms: ms(p99) };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

export async function startNginx(dir: string, socketPath: string, port: number): Promise<ChildProcess> {
  const prefix = join(dir, 'nginx');
  const conf = join(dir, 'nginx.conf');
  await writeFile(
    conf,
    `daemon off;
master_process off;
worker_processes 1;
pid ${prefix}.pid;
error_log ${prefix}-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${prefix}-body;
  proxy_temp_path ${prefix}-proxy;
  fastcgi_temp_path ${prefix}-fastcgi;
  uwsgi_temp_path ${prefix}-uwsgi;
  scgi_temp_path ${prefix}-scgi;
  upstream app {
    server unix:${socketPath};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  );
  const child = spawn(NGINX, ['-p', dir, '-e', `${prefix}-error.log`, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const deadline = Date.now() + 5000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stopChild(child);
      throw new Error(`nginx did not start on port ${port}: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A bench child: `node script …args`, ready once it prints its first line (kept in `ready`). */
export type BenchChild = ChildProcess & { ready?: string };

export function startBenchChild(script: string, args: string[], withStdin = false): Promise<BenchChild> {
  return new Promise((resolve, reject) => {
    const child: BenchChild = spawn(process.execPath, [script, ...args], { stdio: [withStdin ? 'pipe' : 'ignore', 'pipe', 'inherit'] });
    let out = '';
    const onData = (c: Buffer): void => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl === -1) return;
      child.stdout!.off('data', onData);
      child.stdout!.resume();
      child.ready = out.slice(0, nl).trim();
      resolve(child);
    };
    child.stdout!.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`bench child ${args[0]} exited with ${code} before it was ready`)));
  });
}
