// What many half-sent requests from one client do to everyone else (issue 9, item 6).
// A real Shoal store runs in a child process on loopback; attacker children open N
// connections from 127.0.0.2, each sending headers and the start of a body that never
// finishes; then a well-behaved client on 127.0.0.1 makes fresh-connection requests.
// Run twice: with the shared hardening (src/edge) at its defaults, and with it turned
// off through its SHOAL_* variables (no per-client cap, no silence limit, no whole-request
// cap: what the store had before). Loopback only; every child is ended by its pid.
//   node bench/slow-clients.ts [--connections 20000] [--probes 100]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const ATTACKER = '127.0.0.2';
/** Connections per attacker process (each socket is a file descriptor on both sides). */
const PER_ATTACKER = 5000;
const PROBE_TIMEOUT_MS = 2000;
const CONNECT_TIMEOUT_MS = 3000;
/** Each attacker stops trying after this, so the bench ends even against a server that slows down. */
const ATTACK_DEADLINE_MS = 90_000;
const PROBE_CONCURRENCY = 10;

interface Tally {
  /** Still open, unanswered: what the server holds for this client. */
  held: number;
  refused503: number;
  /** Answered 408 after the silence limit, and closed. */
  timedOut408: number;
  /** Closed or reset without an answer, or never connected (within CONNECT_TIMEOUT_MS). */
  failed: number;
  /** Not attempted: the attacker's time (ATTACK_DEADLINE_MS) ran out first. */
  notTried: number;
}

export interface SlowClientsVariant {
  name: string;
  attack: Tally;
  /** Others' requests while the attack was being made. */
  during: { sent: number; ok: number; p50Ms: number | undefined; p99Ms: number | undefined; errors: Record<string, number> };
  /** Others' requests after it, while its connections are held. */
  probes: { sent: number; ok: number; p50Ms: number | undefined; p99Ms: number | undefined; errors: Record<string, number> };
  /** Whether the server process was still running after the attack. */
  serverAlive: boolean;
}

// ---- children --------------------------------------------------------------------

async function serve(dataDir: string): Promise<void> {
  const { startStore } = await import('../src/image/index.ts');
  const store = await startStore({ dataDir });
  process.stdout.write(`${store.url}\n`);
  process.once('SIGTERM', () => process.exit(0));
}

async function attack(port: number, count: number): Promise<void> {
  const half = `PUT /v2/bench/manifests/v1 HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: 100000\r\n\r\n{"schemaVersion":`;
  const states: Array<keyof Tally | 'open'> = [];
  let next = 0;
  const one = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port, localAddress: ATTACKER });
      states[i] = 'open';
      // A server that no longer accepts leaves connects pending for minutes (SYN retries).
      const giveUp = setTimeout(() => {
        states[i] = 'failed';
        s.destroy();
      }, CONNECT_TIMEOUT_MS);
      s.on('connect', () => {
        clearTimeout(giveUp);
        s.write(half, () => resolve());
      });
      s.on('data', (d: Buffer) => {
        const head = d.toString('latin1', 0, 12);
        if (head.startsWith('HTTP/1.1 503')) states[i] = 'refused503';
        else if (head.startsWith('HTTP/1.1 408')) states[i] = 'timedOut408';
      });
      s.on('error', () => undefined); // 'close' follows
      s.on('close', () => {
        clearTimeout(giveUp);
        if (states[i] === 'open') states[i] = 'failed';
        resolve();
      });
    });
  // A bounded number of connection attempts in flight at once.
  const deadline = Date.now() + ATTACK_DEADLINE_MS;
  await Promise.all(
    Array.from({ length: 200 }, async () => {
      while (next < count && Date.now() < deadline) await one(next++);
    }),
  );
  await new Promise((r) => setTimeout(r, 2000)); // let the server's answers arrive
  const tally = (): Tally => {
    const t: Tally = { held: 0, refused503: 0, timedOut408: 0, failed: 0, notTried: count - states.length };
    for (const st of states) t[st === 'open' ? 'held' : st]++;
    return t;
  };
  process.stdout.write(`${JSON.stringify(tally())}\n`);
  // Asked to stop: say how things stand now (while the others were being served), then go.
  process.once('SIGTERM', () => process.stdout.write(`${JSON.stringify(tally())}\n`, () => process.exit(0)));
  setInterval(() => undefined, 60_000); // hold the sockets until told to stop
}

interface Child {
  child: ChildProcess;
  /** The first line the child printed (when it was ready). */
  line: string;
  /** Every line it printed so far. */
  lines: string[];
}

function startChild(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Child> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    const lines: string[] = [];
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      for (let nl = out.indexOf('\n'); nl !== -1; nl = out.indexOf('\n')) {
        lines.push(out.slice(0, nl));
        out = out.slice(nl + 1);
        if (lines.length === 1) resolve({ child, line: lines[0]!, lines });
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`bench child ${args[0]} exited with ${code} before it was ready`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

// ---- the well-behaved client -------------------------------------------------------

function probe(url: string): Promise<{ ms: number } | { error: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(`${url}/v2/`, { agent: false, timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? { ms: performance.now() - t0 } : { error: `status ${res.statusCode}` }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

type Probes = SlowClientsVariant['probes'];

/** Requests on fresh connections, PROBE_CONCURRENCY at a time, until `n` are made or `until` says stop. */
async function probes(url: string, n: number, until: () => boolean = () => false): Promise<Probes> {
  const times: number[] = [];
  const errors: Record<string, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: PROBE_CONCURRENCY }, async () => {
      while (next++ < n && !until()) {
        const r = await probe(url);
        if ('ms' in r) times.push(r.ms);
        else errors[r.error] = (errors[r.error] ?? 0) + 1;
      }
    }),
  );
  times.sort((a, b) => a - b);
  const at = (p: number) => (times.length === 0 ? undefined : times[Math.min(times.length - 1, Math.floor(p * times.length))]);
  const sent = times.length + Object.values(errors).reduce((a, b) => a + b, 0);
  return { sent, ok: times.length, p50Ms: at(0.5), p99Ms: at(0.99), errors };
}

async function variant(name: string, env: NodeJS.ProcessEnv, connections: number, n: number, log: (s: string) => void): Promise<SlowClientsVariant> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-slow-'));
  const server = await startChild(['--serve', dir], env);
  const attackers: Child[] = [];
  try {
    const port = Number(new URL(server.line).port);
    // Others keep coming while the attack is made, and after it.
    let attacking = true;
    const meanwhile = probes(server.line, Number.MAX_SAFE_INTEGER, () => !attacking);
    for (let tried = 0; tried < connections; tried += PER_ATTACKER) {
      attackers.push(await startChild(['--attack', String(port), String(Math.min(PER_ATTACKER, connections - tried))]));
      log(`${name}: ${Math.min(connections, tried + PER_ATTACKER)} half-sent requests tried`);
    }
    attacking = false;
    const during = await meanwhile;
    const served = await probes(server.line, n);
    const serverAlive = server.child.exitCode === null && server.child.signalCode === null;
    // Each attacker says, as it is stopped, how its connections stand now.
    const attack: Tally = { held: 0, refused503: 0, timedOut408: 0, failed: 0, notTried: 0 };
    for (const a of attackers) {
      const before = a.lines.length;
      await stop(a.child);
      const t = JSON.parse(a.lines[before] ?? a.lines.at(-1)!) as Tally;
      for (const k of Object.keys(attack) as Array<keyof Tally>) attack[k] += t[k];
    }
    return { name, attack, during, probes: served, serverAlive };
  } finally {
    await Promise.all(attackers.map((a) => stop(a.child)));
    await stop(server.child);
    await rm(dir, { recursive: true, force: true });
  }
}

export async function runSlowClientsBench(options: { connections?: number; probes?: number; log?: (s: string) => void } = {}): Promise<SlowClientsVariant[]> {
  const connections = options.connections ?? 20_000;
  const n = options.probes ?? 100;
  const log = options.log ?? (() => undefined);
  const off = { SHOAL_MAX_CONNECTIONS_PER_CLIENT: '0', SHOAL_IDLE_TIMEOUT_MS: '0', SHOAL_REQUEST_TIMEOUT_MS: '0', SHOAL_HEADERS_TIMEOUT_MS: '60000' };
  return [
    await variant('hardened (defaults)', {}, connections, n, log),
    await variant('hardening off (as before)', off, connections, n, log),
  ];
}

export function formatSlowClientsBench(rows: SlowClientsVariant[], connections: number): string {
  const ms = (v: number | undefined) => (v === undefined ? '–' : `${v.toFixed(0)} ms`);
  const errs = (e: Record<string, number>) => Object.entries(e).map(([k, v]) => `${k} ×${v}`).join(', ') || 'none';
  const served = (p: Probes) => `${p.ok}/${p.sent}, p50 ${ms(p.p50Ms)}, p99 ${ms(p.p99Ms)}; errors: ${errs(p.errors)}`;
  return [
    `${connections} half-sent requests (headers and the start of a 100 kB body) from ${ATTACKER} to a Shoal store in a child process on loopback, ${PER_ATTACKER} per attacker process, 200 connects in flight each. Others: requests on fresh connections from 127.0.0.1, ${PROBE_CONCURRENCY} at a time (${PROBE_TIMEOUT_MS} ms timeout each), while the attack is made and then ${rows[0]?.probes.sent ?? 0} more while its connections are held. The attacker's counts are as they stood at the end.`,
    '',
    "| server | attacker: held | refused 503 | 408 after silence | closed / never connected | not tried (its 90 s ran out) | server up | others served during the attack | others served after |",
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.attack.held} | ${r.attack.refused503} | ${r.attack.timedOut408} | ${r.attack.failed} | ${r.attack.notTried} | ${r.serverAlive ? 'yes' : 'no'} | ${served(r.during)} | ${served(r.probes)} |`,
    ),
  ].join('\n');
}

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i === -1 ? undefined : argv[i + 1];
};
if (process.argv[1] === SELF) {
  if (argv[0] === '--serve') await serve(argv[1]!);
  else if (argv[0] === '--attack') await attack(Number(argv[1]), Number(argv[2]));
  else {
    const c = flag('--connections');
    const p = flag('--probes');
    const rows = await runSlowClientsBench({
      ...(c === undefined ? {} : { connections: Number(c) }),
      ...(p === undefined ? {} : { probes: Number(p) }),
      log: (s) => process.stderr.write(`[slow-clients] ${s}\n`),
    });
    console.log(formatSlowClientsBench(rows, c === undefined ? 20_000 : Number(c)));
  }
}
