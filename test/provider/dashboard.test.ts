// The dashboard's server side on a real provider (no browser): the page and its files are
// served with a strict CSP; the login turns an API token into an HttpOnly SameSite=Strict
// session cookie (refusing bad, invoke-only and cross-origin logins); the page's API calls
// with the cookie pass the same gate as tokens (roles, audit), changes need the session's
// CSRF header; the live events arrive over SSE; revoking the token ends the session.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProvider, type Provider } from '../../src/provider/index.ts';
import { createApiToken } from '../../src/provider/auth/index.ts';
import { ECHO_TEST_SERVICE } from './fixtures/fake-host.ts';
import { FAST } from './fixtures/provider.ts';

describe('the dashboard on a provider', () => {
  let dir = '';
  let provider: Provider;
  const tokens = { admin: { secret: '', id: '' }, read: { secret: '', id: '' }, invoke: { secret: '', id: '' } };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shoal-dash-'));
    provider = await startProvider({ listen: { host: '127.0.0.1', port: 0 }, database: join(dir, 'p.db'), joinToken: 'join-token-for-tests', tuning: FAST });
    for (const role of ['admin', 'read', 'invoke'] as const) {
      const t = await createApiToken(provider.registry, { role });
      tokens[role] = { secret: t.secret, id: t.token.id };
    }
  });
  after(async () => {
    await provider?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const login = (token: string, headers: Record<string, string> = {}) =>
    fetch(`${provider.url}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ token }) });
  async function session(token: string): Promise<{ cookie: string; csrf: string; setCookie: string }> {
    const res = await login(token);
    assert.equal(res.status, 201, await res.clone().text());
    const setCookie = res.headers.get('set-cookie')!;
    return { cookie: setCookie.split(';')[0]!, csrf: ((await res.json()) as { csrf: string }).csrf, setCookie };
  }

  it('serves the page and its files, open, with a CSP that allows only its own origin', async () => {
    const redirect = await fetch(`${provider.url}/ui`, { redirect: 'manual' });
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.get('location'), '/ui/');
    const page = await fetch(`${provider.url}/ui/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type')!, /text\/html/);
    assert.match(page.headers.get('content-security-policy')!, /default-src 'none'; script-src 'self'/);
    const html = await page.text();
    assert.match(html, /assets\/app\.js/);
    assert.doesNotMatch(html, /https?:\/\//, 'nothing from outside');
    const js = await fetch(`${provider.url}/ui/assets/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type')!, /javascript/);
    assert.ok((await js.arrayBuffer()).byteLength > 10_000);
    assert.equal((await fetch(`${provider.url}/ui/assets/..%2f..%2fpackage.json`)).status, 404);
    assert.equal((await fetch(`${provider.url}/ui/nope.js`)).status, 404);
  });

  it('refuses bad tokens, invoke tokens, non-JSON and cross-origin logins', async () => {
    assert.equal((await login('shoal_nope_nope')).status, 401);
    assert.equal((await login('')).status, 400);
    assert.equal((await login(tokens.invoke.secret)).status, 403);
    assert.equal((await login(tokens.admin.secret, { origin: 'http://evil.example' })).status, 403);
    const form = await fetch(`${provider.url}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${tokens.admin.secret}` });
    assert.equal(form.status, 415);
    const audit = (await (await fetch(`${provider.url}/api/v1/audit`, { headers: { authorization: `Bearer ${tokens.admin.secret}` } })).json()) as { entries: Array<{ route: string; status: number }> };
    assert.ok(audit.entries.some((e) => e.route === '/ui/session' && e.status === 401), 'failed logins are audited');
  });

  it('opens an HttpOnly SameSite=Strict session that passes the gate with its role', async () => {
    const s = await session(tokens.read.secret);
    assert.match(s.setCookie, /^shoal_session=[\w-]{40,}; Path=\/; HttpOnly; SameSite=Strict$/);
    const me = (await (await fetch(`${provider.url}/ui/session`, { headers: { cookie: s.cookie } })).json()) as { tokenId: string; role: string; csrf: string };
    assert.deepEqual(me, { tokenId: tokens.read.id, role: 'read', csrf: s.csrf });
    assert.equal((await fetch(`${provider.url}/api/v1/hosts`, { headers: { cookie: s.cookie } })).status, 200);
    assert.equal((await fetch(`${provider.url}/api/v1/audit`, { headers: { cookie: s.cookie } })).status, 403, 'read is no admin');
    const scale = await fetch(`${provider.url}/api/v1/services/echo/scale`, { method: 'PUT', headers: { cookie: s.cookie, 'x-shoal-csrf': s.csrf, 'content-type': 'application/json' }, body: '{"instances":1}' });
    assert.equal(scale.status, 403, 'read cannot scale');
    assert.equal((await fetch(`${provider.url}/api/v1/hosts`, { headers: { cookie: 'shoal_session=forged' } })).status, 401);
  });

  it('needs the CSRF header (and a matching Origin) for changes made with a session', async () => {
    const s = await session(tokens.admin.secret);
    const headers = { cookie: s.cookie, 'content-type': 'application/json' };
    const without = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers, body: JSON.stringify(ECHO_TEST_SERVICE) });
    assert.equal(without.status, 403);
    assert.match(await without.text(), /x-shoal-csrf/);
    const wrong = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers: { ...headers, 'x-shoal-csrf': 'x'.repeat(s.csrf.length) }, body: JSON.stringify(ECHO_TEST_SERVICE) });
    assert.equal(wrong.status, 403);
    const otherOrigin = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers: { ...headers, 'x-shoal-csrf': s.csrf, origin: 'http://127.0.0.1:1' }, body: JSON.stringify(ECHO_TEST_SERVICE) });
    assert.equal(otherOrigin.status, 403);
    assert.equal(await provider.registry.getService('echo'), undefined, 'nothing registered');
    const ok = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers: { ...headers, 'x-shoal-csrf': s.csrf, origin: provider.url }, body: JSON.stringify(ECHO_TEST_SERVICE) });
    assert.equal(ok.status, 201, await ok.text());
    const audit = await provider.registry.listAudit({});
    const row = audit.find((e) => e.route === '/api/v1/services' && e.status === 201);
    assert.equal(row?.tokenId, tokens.admin.id, 'the audit row names the session token');
    // Scale and remove answer through the gate: unknown names are 404, bodies are checked.
    const put = (body: string) => fetch(`${provider.url}/api/v1/services/nope/scale`, { method: 'PUT', headers: { ...headers, 'x-shoal-csrf': s.csrf }, body });
    assert.equal((await put('{"instances":1}')).status, 404);
    assert.equal((await put('{"instances":-1}')).status, 400);
    assert.equal((await fetch(`${provider.url}/api/v1/instances/nope`, { method: 'DELETE', headers: { cookie: s.cookie, 'x-shoal-csrf': s.csrf } })).status, 404);
  });

  it('streams registry events to a session over SSE', async () => {
    const s = await session(tokens.read.secret);
    assert.equal((await fetch(`${provider.url}/ui/events`)).status, 401, 'no session, no events');
    const ac = new AbortController();
    const res = await fetch(`${provider.url}/ui/events`, { headers: { cookie: s.cookie }, signal: ac.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /text\/event-stream/);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const admin = { authorization: `Bearer ${tokens.admin.secret}`, 'content-type': 'application/json' };
    const registered = await fetch(`${provider.url}/api/v1/services`, { method: 'POST', headers: admin, body: JSON.stringify({ ...ECHO_TEST_SERVICE, name: 'echo-two' }) });
    assert.equal(registered.status, 201);
    while (!/"service":"echo-two"/.test(text)) {
      const { value, done } = await reader.read();
      assert.ok(!done, `the stream ended: ${text}`);
      text += value;
    }
    assert.match(text, /event: shoal\ndata: \{"id":\d+,"at":\d+,"kind":"service-registered","service":"echo-two"/);
    ac.abort();
  });

  it('ends the session when its token is revoked, and on logout', async () => {
    const s = await session(tokens.read.secret);
    assert.equal((await fetch(`${provider.url}/api/v1/hosts`, { headers: { cookie: s.cookie } })).status, 200);
    const revoked = await fetch(`${provider.url}/api/v1/tokens/${tokens.read.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${tokens.admin.secret}` } });
    assert.equal(revoked.status, 200);
    assert.equal((await fetch(`${provider.url}/api/v1/hosts`, { headers: { cookie: s.cookie } })).status, 401);
    assert.equal((await fetch(`${provider.url}/ui/session`, { headers: { cookie: s.cookie } })).status, 401);

    const a = await session(tokens.admin.secret);
    assert.equal((await fetch(`${provider.url}/ui/session`, { method: 'DELETE', headers: { cookie: a.cookie } })).status, 403, 'logout needs the CSRF header too');
    const out = await fetch(`${provider.url}/ui/session`, { method: 'DELETE', headers: { cookie: a.cookie, 'x-shoal-csrf': a.csrf } });
    assert.equal(out.status, 200);
    assert.match(out.headers.get('set-cookie')!, /Max-Age=0/);
    assert.equal((await fetch(`${provider.url}/api/v1/hosts`, { headers: { cookie: a.cookie } })).status, 401);
  });
});
