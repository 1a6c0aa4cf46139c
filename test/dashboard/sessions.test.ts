// Sessions alone (src/dashboard/sessions.ts): the cookie's attributes (Secure over TLS),
// idle expiry, and the checks sessionOf makes: the token re-read on every use, the CSRF
// header and the Origin on changes. The token source is a table in memory here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { clearedCookie, cookieValue, createSessionStore, sessionCookie, sessionOf, type DashboardTokens } from '../../src/dashboard/sessions.ts';

const request = (method: string, headers: Record<string, string>) => ({ method, headers }) as unknown as IncomingMessage;

test('the cookie is HttpOnly and SameSite=Strict, Secure over TLS; cookies parse', () => {
  assert.equal(sessionCookie('abc', false), 'shoal_session=abc; Path=/; HttpOnly; SameSite=Strict');
  assert.equal(sessionCookie('abc', true), 'shoal_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure');
  assert.match(clearedCookie(true), /Max-Age=0; Secure$/);
  assert.equal(cookieValue('a=1; shoal_session=xyz; b=2', 'shoal_session'), 'xyz');
  assert.equal(cookieValue('a=1', 'shoal_session'), undefined);
});

test('sessions expire when idle and are random', () => {
  let now = 1000;
  const store = createSessionStore({ idleMs: 100, now: () => now });
  const a = store.open('t1');
  const b = store.open('t1');
  assert.notEqual(a.id, b.id);
  assert.notEqual(a.csrf, b.csrf);
  assert.ok(a.id.length >= 40);
  now += 90;
  assert.equal(store.get(a.id)?.tokenId, 't1', 'used: kept');
  now += 150;
  assert.equal(store.get(a.id), undefined, 'idle: gone');
});

test('sessionOf: no cookie, stale token, CSRF and Origin on changes', async () => {
  const live = new Set(['t1']);
  const tokens: DashboardTokens = {
    verify: async () => ({ ok: false, reason: 'unknown' }),
    check: async (id) => (live.has(id) ? { ok: true, principal: { tokenId: id, role: 'deploy' } } : { ok: false, reason: 'revoked' }),
  };
  const store = createSessionStore();
  const s = store.open('t1');
  const cookie = `shoal_session=${s.id}`;
  const host = 'localhost:7070';
  assert.equal(await sessionOf(request('GET', { host }), store, tokens), undefined);
  assert.equal((await sessionOf(request('GET', { host, cookie }), store, tokens))?.ok, true);
  const noCsrf = await sessionOf(request('POST', { host, cookie }), store, tokens);
  assert.deepEqual(noCsrf?.ok === false && [noCsrf.status, noCsrf.field], [403, 'x-shoal-csrf']);
  assert.equal((await sessionOf(request('POST', { host, cookie, 'x-shoal-csrf': s.csrf }), store, tokens))?.ok, true);
  assert.equal((await sessionOf(request('DELETE', { host, cookie, 'x-shoal-csrf': s.csrf, origin: `http://${host}` }), store, tokens))?.ok, true);
  const cross = await sessionOf(request('DELETE', { host, cookie, 'x-shoal-csrf': s.csrf, origin: 'http://localhost:9999' }), store, tokens);
  assert.deepEqual(cross?.ok === false && [cross.status, cross.field], [403, 'origin']);
  live.delete('t1');
  const revoked = await sessionOf(request('GET', { host, cookie }), store, tokens);
  assert.deepEqual(revoked?.ok === false && revoked.status, 401);
  assert.equal(store.get(s.id), undefined, 'a revoked token drops its session');
});

test("one token's logins cannot push other tokens' sessions out", () => {
  const store = createSessionStore({ maxSessions: 100, maxPerToken: 4 });
  const victim = store.open('victim');
  const mine = Array.from({ length: 500 }, () => store.open('attacker'));
  assert.equal(store.get(victim.id)?.tokenId, 'victim', 'the other token keeps its session');
  assert.equal(store.size(), 5, 'four of the attacker token, one of the victim');
  assert.deepEqual(
    mine.slice(-4).map((s) => store.get(s.id)?.id),
    mine.slice(-4).map((s) => s.id),
    'the newest logins of a token are the ones kept',
  );
  assert.equal(store.get(mine[0]!.id), undefined);
});
