// Issue 9, item 5, end to end on a provider with fake hosts: the messages that crashed or
// froze the whole provider (a deep body against a recursive $ref; ^(a+)+$ against 31
// bytes) are refused with 400 while another service keeps answering, and schemas whose
// keywords would go unenforced are refused at registration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adminAuth, startFarm } from './fixtures/provider.ts';

const HOSTILE = {
  name: 'hostile',
  version: '1',
  image: 'echo:1',
  operations: {
    // Named after operations the fake host's instances answer.
    Write: {
      input: { $defs: { node: { type: 'object', properties: { next: { $ref: '#/$defs/node' } } } }, $ref: '#/$defs/node' },
      output: { type: 'object' },
    },
    Echo: { input: { type: 'object', properties: { message: { type: 'string', pattern: '^(a+)+$' } } }, output: { type: 'object' } },
  },
};

/** POST as the farm's admin (the gate lets it through, so what answers is the validator). */
async function post(url: string, body: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { ...adminAuth(new URL(url).origin), 'content-type': 'application/json' }, body });
  return { status: res.status, body: await res.json() };
}

test('message safety: a deep recursive body and a ReDoS pattern are refused while echo keeps answering', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  await farm.provider.registerService(HOSTILE);
  assert.equal((await farm.call('Echo', { message: 'warm' })).status, 200);

  // Echo keeps being called the whole time the hostile messages are in flight.
  let stop = false;
  const echoes: number[] = [];
  const echoing = (async () => {
    while (!stop) echoes.push((await farm.call('Echo', { message: 'still here' })).status);
  })();

  const n = 5_000; // ~45 KB: {"next":{"next":…{}…}}
  const deep = `${'{"next":'.repeat(n)}{}${'}'.repeat(n)}`;
  // 31 bytes of text: a backtracking engine takes ~2^30 steps (minutes) to refuse it.
  const text = `${'a'.repeat(30)}!`;
  assert.equal(Buffer.byteLength(text), 31);
  const redos = JSON.stringify({ message: text });
  const [tree, match, tree2] = await Promise.all([
    post(`${farm.provider.url}/s/hostile/Write`, deep),
    post(`${farm.provider.url}/s/hostile/Echo`, redos),
    post(`${farm.provider.url}/s/hostile/Write`, deep),
  ]);
  // One more echo after the attack, then stop the loop.
  await farm.call('Echo', { message: 'after' });
  stop = true;
  await echoing;

  assert.equal(tree.status, 400);
  assert.equal(tree.body.error.code, 'invalid');
  assert.match(tree.body.error.message, /nested deeper than 64 levels/);
  assert.equal(tree2.status, 400);
  assert.equal(match.status, 400);
  assert.equal(match.body.error.field, '/message');
  assert.match(match.body.error.message, /must match pattern/);
  assert.ok(echoes.length >= 1, 'echo answered during the attack');
  assert.deepEqual(new Set(echoes), new Set([200]));
  // The provider is still whole: a matching message goes through.
  const fine = await post(`${farm.provider.url}/s/hostile/Echo`, JSON.stringify({ message: 'aaa' }));
  assert.equal(fine.status, 200, JSON.stringify(fine.body));
});

test('message safety: registration refuses keywords that would not be enforced and patterns RE2 cannot run', async (t) => {
  const farm = await startFarm(t, { hosts: 1 });
  const register = (input: unknown) =>
    fetch(`${farm.provider.url}/api/v1/services`, {
      method: 'POST',
      headers: { ...adminAuth(farm.provider.url), 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bad', version: '1', image: 'echo:1', operations: { Op: { input, output: { type: 'object' } } } }),
    }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
  for (const [input, why] of [
    [{ type: 'object', propertyNamez: { maxLength: 3 } }, /unknown keyword/],
    [{ type: 'string', format: 'credit-card' }, /unknown format/],
    [{ type: 'string', pattern: '^(a)\\1$' }, /linear time/],
    [{ type: 'array', items: { type: 'object' }, uniqueItems: true }, /uniqueItems needs/],
  ] as const) {
    const r = await register(input);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.field, '/operations/Op/input');
    assert.match(r.body.error.message, why);
  }
  // unevaluatedProperties is now enforced on the message path.
  assert.equal((await register({ type: 'object', properties: { a: { type: 'string' } }, unevaluatedProperties: false })).status, 201);
  const extra = await post(`${farm.provider.url}/s/bad/Op`, JSON.stringify({ a: 'x', card: '4111' }));
  assert.equal(extra.status, 400);
  assert.equal(extra.body.error.field, '/card');
});
