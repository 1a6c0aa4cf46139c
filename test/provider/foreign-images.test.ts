// How many image copies from other registries run at once: each stages layers on disk, and
// registrations are network input, so a burst waits in a bounded line and the rest are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isShoalError } from '../../src/protocol/index.ts';
import { checkRegistryHost, createCopySlots } from '../../src/provider/foreign-images.ts';

test('copy slots: two run, two wait in line, the fifth is refused at once naming the field; a freed slot goes to the next in line', async () => {
  const slots = createCopySlots(2, 2);
  const a = await slots.take('image');
  const b = await slots.take('image');
  const order: string[] = [];
  const c = slots.take('image').then((r) => (order.push('c'), r));
  const d = slots.take('image').then((r) => (order.push('d'), r));
  await assert.rejects(slots.take('/image'), (e: unknown) => isShoalError(e) && e.code === 'unavailable' && e.field === '/image');
  a();
  const releaseC = await c;
  assert.deepEqual(order, ['c']);
  b();
  const releaseD = await d;
  assert.deepEqual(order, ['c', 'd']);
  releaseC();
  releaseD();
  // All free again: two at once without waiting.
  (await slots.take('image'))();
  (await slots.take('image'))();
});

test('login scopes: a host, a host with a port, a namespace; nothing that climbs or is not a name', () => {
  assert.equal(checkRegistryHost('Registry.Example.com:5000'), 'registry.example.com:5000');
  assert.equal(checkRegistryHost('registry.example.com/team/app/'), 'registry.example.com/team/app');
  for (const bad of ['', 'registry.example.com/../x', 'registry.example.com//x', 'https://registry.example.com', 'a b', 'registry.example.com/Team%2F']) {
    assert.throws(() => checkRegistryHost(bad), (e: unknown) => isShoalError(e) && e.field === 'host', bad);
  }
});
