// The message path's cost of authentication: one provider on a fake host, two services
// alike but for `access` (public, token), messages sent to each in interleaved rounds over
// one keep-alive connection each; p50/p99 per message. And the verifier alone: a cached
// verdict (what a warm message pays) and a fresh one (a control call: one registry read).
//   node bench/auth.ts [messages-per-round] [rounds]
import { Agent, request } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProvider } from '../src/provider/index.ts';
import { createApiToken, createRegistryVerifier } from '../src/provider/auth/index.ts';
import { ECHO_TEST_SERVICE, startFakeHost, startTinyStore } from '../test/provider/fixtures/fake-host.ts';

const perRound = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 5);

const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-auth-'));
const store = await startTinyStore();
const host = await startFakeHost({});
const provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'p.db'), storeUrl: store.url, joinToken: 'bench-join-token' });
try {
  await provider.registerHost({ controlUrl: host.controlUrl, token: host.token });
  await provider.registerService({ ...ECHO_TEST_SERVICE, name: 'open', access: 'public' });
  await provider.registerService({ ...ECHO_TEST_SERVICE, name: 'closed', access: 'token' });
  const token = (await createApiToken(provider.registry, { role: 'invoke' })).secret;
  const body = JSON.stringify({ message: 'x'.repeat(64) });
  const agents = { open: new Agent({ keepAlive: true, maxSockets: 1 }), closed: new Agent({ keepAlive: true, maxSockets: 1 }) };
  const once = (service: 'open' | 'closed') =>
    new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
      if (service === 'closed') headers.authorization = `Bearer ${token}`;
      const req = request(`${provider.url}/s/${service}/Echo`, { method: 'POST', agent: agents[service], headers }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - t0) : reject(new Error(`${service}: HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  for (const s of ['open', 'closed'] as const) for (let i = 0; i < 200; i++) await once(s); // deploy and warm up
  const samples = { open: [] as number[], closed: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    // Interleaved: the same rounds, alternating which goes first.
    const order = r % 2 === 0 ? (['open', 'closed'] as const) : (['closed', 'open'] as const);
    for (const s of order) for (let i = 0; i < perRound; i++) samples[s].push(await once(s));
  }
  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  process.stdout.write(`message path, ${rounds} interleaved rounds of ${perRound} messages each, one connection per service:\n`);
  for (const s of ['open', 'closed'] as const) {
    process.stdout.write(`  ${s === 'open' ? 'public ' : 'token  '}  p50 ${(pct(samples[s], 50) * 1000).toFixed(0)} µs   p99 ${(pct(samples[s], 99) * 1000).toFixed(0)} µs\n`);
  }
  for (const a of Object.values(agents)) a.destroy();

  const verifier = createRegistryVerifier({ tokens: provider.registry, cacheTtlMs: 60_000 });
  await verifier.verify(token);
  const n = 100_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) await verifier.verify(token);
  const cached = ((performance.now() - t0) / n) * 1000;
  const m = 2000;
  t0 = performance.now();
  for (let i = 0; i < m; i++) await verifier.verify(token, { fresh: true });
  const fresh = ((performance.now() - t0) / m) * 1000;
  process.stdout.write(`verifier: cached verdict ${cached.toFixed(2)} µs per check (${n} checks); fresh (one SQLite read) ${fresh.toFixed(1)} µs (${m} checks)\n`);
} finally {
  await provider.close();
  await host.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
}
