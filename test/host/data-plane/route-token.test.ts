import { test } from 'node:test';
import assert from 'node:assert/strict';
import { claimsReach, generateRouteKey, signRouteToken, verifyRouteToken, type RouteClaims } from '../../../src/host/data-plane/route-token.ts';
import { ShoalError } from '../../../src/protocol/errors.ts';

const key = generateRouteKey();
const claims: RouteClaims = { instance: 'inst-1', service: 'payment', expiresAt: 2_000_000_000_000, operations: ['Pay', 'Refund'] };
const now = 1_900_000_000_000;

test('a signed token verifies and gives back its claims', () => {
  const token = signRouteToken(claims, key);
  assert.match(token, /^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(verifyRouteToken(token, key, now), { ok: true, claims });
  // Names with characters outside base64url survive the round trip.
  const odd = { instance: 'ï/é "x"', service: 'a.b\n', expiresAt: claims.expiresAt, operations: [] };
  assert.deepEqual(verifyRouteToken(signRouteToken(odd, key), key, now), { ok: true, claims: odd });
});

test('a token whose claims were altered has a bad signature', () => {
  const token = signRouteToken(claims, key);
  const [v, , sig] = token.split('.');
  for (const altered of [
    { ...claims, instance: 'inst-2' },
    { ...claims, service: 'order' },
    { ...claims, expiresAt: claims.expiresAt + 1 },
    { ...claims, operations: ['Pay', 'Refund', 'Admin'] },
    { ...claims, operations: [] },
  ]) {
    const payload = Buffer.from(JSON.stringify([altered.instance, altered.service, altered.expiresAt, altered.operations])).toString('base64url');
    assert.deepEqual(verifyRouteToken(`${v}.${payload}.${sig}`, key, now), { ok: false, reason: 'bad-signature' });
  }
  // One flipped signature character.
  const last = token.at(-2) === 'A' ? 'B' : 'A';
  const flipped = token.slice(0, -2) + last + token.at(-1);
  assert.deepEqual(verifyRouteToken(flipped, key, now), { ok: false, reason: 'bad-signature' });
  // Signed with another key.
  assert.deepEqual(verifyRouteToken(signRouteToken(claims, generateRouteKey()), key, now), { ok: false, reason: 'bad-signature' });
});

test('an expired token is refused as expired', () => {
  const token = signRouteToken(claims, key);
  assert.deepEqual(verifyRouteToken(token, key, claims.expiresAt), { ok: false, reason: 'expired' });
  assert.deepEqual(verifyRouteToken(token, key, claims.expiresAt + 1), { ok: false, reason: 'expired' });
  assert.equal(verifyRouteToken(token, key, claims.expiresAt - 1).ok, true);
  // Default `now` is the clock: a token that expired in the past is refused.
  const past = signRouteToken({ ...claims, expiresAt: Date.now() - 1000 }, key);
  assert.deepEqual(verifyRouteToken(past, key), { ok: false, reason: 'expired' });
});

test('garbage is malformed', () => {
  const token = signRouteToken(claims, key);
  for (const garbage of ['', 'x', 'v1.', 'v1..', 'v2' + token.slice(2), token + 'A', token.slice(0, -1), 'v1.a b.' + 'A'.repeat(43), 'v1.' + 'A'.repeat(5000)]) {
    assert.deepEqual(verifyRouteToken(garbage, key, now), { ok: false, reason: 'malformed' }, JSON.stringify(garbage.slice(0, 60)));
  }
  assert.deepEqual(verifyRouteToken(undefined as unknown as string, key, now), { ok: false, reason: 'malformed' });
  // The last signature character carries two spare bits: a second spelling of the same
  // signature bytes is refused, so each token has exactly one spelling.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const respelled = token.slice(0, -1) + alphabet[alphabet.indexOf(token.at(-1)!) ^ 1];
  assert.deepEqual(verifyRouteToken(respelled, key, now), { ok: false, reason: 'malformed' });
});

test('a correctly signed payload that is not claims is malformed', async () => {
  const { createHmac } = await import('node:crypto');
  const payload = Buffer.from(JSON.stringify({ instance: 'x' })).toString('base64url');
  const sig = createHmac('sha256', key).update(`v1.${payload}`).digest('base64url');
  assert.deepEqual(verifyRouteToken(`v1.${payload}.${sig}`, key, now), { ok: false, reason: 'malformed' });
});

test('key rotation: sign with the first key, accept any listed key', () => {
  const oldKey = generateRouteKey();
  const newKey = generateRouteKey();
  const oldToken = signRouteToken(claims, [oldKey]);
  const newToken = signRouteToken(claims, [newKey, oldKey]);
  assert.equal(verifyRouteToken(newToken, [newKey], now).ok, true, 'signed with the first key');
  assert.equal(verifyRouteToken(newToken, [oldKey], now).ok, false);
  assert.equal(verifyRouteToken(oldToken, [newKey, oldKey], now).ok, true, 'old tokens still pass during rotation');
  assert.deepEqual(verifyRouteToken(oldToken, [newKey], now), { ok: false, reason: 'bad-signature' }, 'retired key');
  assert.deepEqual(verifyRouteToken(oldToken, [], now), { ok: false, reason: 'bad-signature' });
});

test('signing refuses bad input clearly', () => {
  assert.throws(() => signRouteToken(claims, []), (e: unknown) => e instanceof ShoalError && e.code === 'invalid' && e.field === 'keys');
  assert.throws(() => signRouteToken(claims, new Uint8Array(8)), /at least 16/);
  assert.throws(() => signRouteToken({ ...claims, instance: '' }, key), (e: unknown) => e instanceof ShoalError && e.field === 'instance');
  assert.throws(() => signRouteToken({ ...claims, service: 'x'.repeat(300) }, key), (e: unknown) => e instanceof ShoalError && e.field === 'service');
  assert.throws(() => signRouteToken({ ...claims, expiresAt: 1.5 }, key), (e: unknown) => e instanceof ShoalError && e.field === 'expiresAt');
});

test('a token reaches the operations it names and no other path; no list reaches any path', () => {
  const verified = verifyRouteToken(signRouteToken(claims, key), key, now);
  assert.ok(verified.ok);
  const c = verified.claims;
  assert.deepEqual(c.operations, ['Pay', 'Refund']);
  for (const path of ['/Pay', '/Refund', '/Pay?x=1', '/Pay/sub']) assert.equal(claimsReach(c, path), true, path);
  for (const path of ['/', '/Admin', '/Pa', '/Payx', '/healthz', '/%50ay', '//Pay']) assert.equal(claimsReach(c, path), false, path);
  const open = verifyRouteToken(signRouteToken({ instance: 'i', service: 's', expiresAt: claims.expiresAt }, key), key, now);
  assert.ok(open.ok);
  assert.equal(claimsReach(open.claims, '/anything'), true);
  assert.throws(() => signRouteToken({ ...claims, operations: ['a/b'] }, key), (e: unknown) => e instanceof ShoalError && e.field === 'operations');
});
