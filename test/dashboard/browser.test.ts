// The dashboard in a real browser: Debian's Chromium driven by playwright-core, against a
// real `shoal up` (process driver, OS-chosen loopback port, its own state dir). Login is
// refused with a bad token and opens a session with the admin token; the pages render the
// real host, instances, timelines and the Adventure Works farm's graph; a deployment shows
// up live over server-sent events; changes without the CSRF token, from a page of another
// origin, or after the token is revoked are refused; every page is screenshotted and the
// image checked (not blank), at laptop and phone widths. SHOAL_SCREENSHOTS=docs/img
// writes the screenshots the README shows.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { freePort } from '../fixtures/free-port.ts';
import { until } from '../fixtures/until.ts';
import { echoStoreDir } from '../provider/fixtures/echo-store.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOAL = join(ROOT, 'bin/shoal.js');
const CHROMIUM = '/usr/bin/chromium';

function skipReason(): string | false {
  if (existsSync(CHROMIUM)) return false;
  const reason = `no Chromium at ${CHROMIUM} (bash scripts/setup-system.sh installs it)`;
  if (process.env.CI === 'true') throw new Error(`CI=true but this machine cannot run the browser tests: ${reason}`);
  return reason;
}

/** A screenshot worth keeping: a real PNG of some size whose pixels are not all one colour. */
async function checkScreenshot(page: Page, png: Buffer, name: string): Promise<void> {
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG', `${name}: not a PNG`);
  assert.ok(png.length > 8000, `${name}: ${png.length} bytes, nearly empty`);
  // Decoded by the browser itself (no PNG library here): distinct colours on a sparse grid.
  const colours = (await page.evaluate(`(async () => {
    const img = new Image();
    img.src = 'data:image/png;base64,${png.toString('base64')}';
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, img.width, img.height).data;
    const seen = new Set();
    for (let i = 0; i < data.length && seen.size < 1000; i += 4 * 7) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    return seen.size;
  })()`)) as number;
  assert.ok(colours > 20, `${name}: only ${colours} colours, a blank page`);
}

describe('the dashboard in Chromium against shoal up', { skip: skipReason() }, () => {
  let dir = '';
  let data = '';
  let hostData: string | undefined;
  let child: ChildProcess | undefined;
  let url = '';
  let dashboardUrl = '';
  let admin = '';
  let context: BrowserContext | undefined;
  let page: Page;
  let evil: Server | undefined;
  let out = '';
  let err = '';
  const shots = process.env.SHOAL_SCREENSHOTS ? resolve(ROOT, process.env.SHOAL_SCREENSHOTS) : undefined;
  const bearer = () => ({ authorization: `Bearer ${admin}`, 'content-type': 'application/json' });

  /** Checks the page, screenshots it and checks the image; `readme` ones go to SHOAL_SCREENSHOTS. */
  async function shot(p: Page, name: string, check: () => Promise<void>, readme = true): Promise<void> {
    await check();
    const png = await p.screenshot({ fullPage: true });
    await checkScreenshot(p, png, name);
    await writeFile(join(dir, `${name}.png`), png);
    if (shots !== undefined && readme) {
      await mkdir(shots, { recursive: true });
      await writeFile(join(shots, `dashboard-${name}.png`), png);
    }
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dash-'));
    data = join(dir, 'state');
    await cp(await echoStoreDir(), join(data, 'store'), { recursive: true });
    const port = await freePort();
    child = spawn(process.execPath, [SHOAL, 'up', '--driver', 'process', '--listen', `127.0.0.1:${port}`, '--data', data], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SHOAL_LOG_LEVEL: 'warn' },
    });
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    await new Promise<void>((resolveReady, reject) => {
      child!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('Ctrl-C stops everything')) resolveReady();
      });
      child!.once('exit', (code) => reject(new Error(`shoal up exited (${code}): ${err}`)));
    });
    url = `http://127.0.0.1:${port}`;
    hostData = /host state in (\S+)/.exec(out)?.[1];
    dashboardUrl = /dashboard +(\S+)/.exec(out)?.[1] ?? '';
    admin = (await readFile(join(data, 'admin-token'), 'utf8')).trim();
    context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 },
    });
    page = context.pages()[0] ?? (await context.newPage());
  });

  after(async () => {
    await context?.close();
    evil?.close();
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      await new Promise((r) => child!.once('exit', r));
    }
    if (dir) await rm(dir, { recursive: true, force: true });
    if (hostData !== undefined && !hostData.startsWith(dir)) await rm(hostData, { recursive: true, force: true });
  });

  it('shoal up prints the /ui address', () => {
    assert.equal(dashboardUrl, `${url}/ui/`, out);
  });

  it('refuses a bad token, then logs in with the admin token and shows the host', async () => {
    await page.goto(dashboardUrl);
    await page.getByLabel('API token').fill('shoal_nope_notatoken');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Login refused' }).waitFor();
    await shot(page, 'login', async () => {
      assert.equal(await page.getByRole('button', { name: 'Log in' }).count(), 1);
    });

    await page.getByLabel('API token').fill(admin);
    await page.getByRole('button', { name: 'Log in' }).click();
    const host = page.locator('article.host').first();
    await host.waitFor();
    await host.getByText('alive').waitFor();
    const cookies = await context!.cookies(url);
    const session = cookies.find((c) => c.name === 'shoal_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    await shot(page, 'hosts-first', async () => {
      const hosts = (await (await fetch(`${url}/api/v1/hosts`, { headers: bearer() })).json()) as { hosts: Array<{ id: string }> };
      await page.locator(`[data-host="${hosts.hosts[0]!.id}"]`).waitFor();
      await page.getByRole('cell', { name: 'process (default)' }).waitFor();
      await page.getByRole('meter', { name: 'memory' }).waitFor();
    }, false);
  });

  it('shows a deployment live, then its instance and its timeline as a waterfall', async () => {
    await page.goto(`${dashboardUrl}#/events`);
    await page.getByRole('heading', { name: 'Live' }).waitFor();
    await page.locator('.live.on').waitFor();
    const res = await fetch(`${url}/api/v1/services/echo/deployments`, { method: 'POST', headers: bearer(), body: '{"count":1}' });
    assert.equal(res.status, 201, await res.text());
    await page.locator('ol.events li[data-kind="deployed"]').filter({ hasText: 'echo' }).first().waitFor();
    await shot(page, 'events', async () => {
      await page.locator('table.audit').getByText('/api/v1/services/echo/deployments').first().waitFor();
    });

    await page.getByRole('link', { name: 'Services' }).click();
    const row = page.locator('table.instances tbody tr').filter({ hasText: 'echo' }).first();
    await row.waitFor();
    assert.match(await row.innerText(), /process/);
    assert.match(await row.innerText(), /ready/);
    await shot(page, 'services', async () => {
      await page.locator('tr[data-service="echo"]').getByRole('button', { name: 'Deploy now' }).waitFor();
    });

    await page.getByRole('link', { name: 'Deployments' }).click();
    const wf = page.locator('article.deployment').filter({ hasText: 'echo' }).first();
    await wf.locator('[data-phase="start"]').waitFor();
    await wf.locator('[data-phase="ready"]').waitFor();
    assert.match(await wf.innerText(), /pulled/);
    await shot(page, 'deployments', async () => {
      assert.ok((await wf.locator('.wf-row').count()) >= 4);
    });

    // The host's next report counts the instance and its cached layers.
    await page.getByRole('link', { name: 'Hosts' }).click();
    await page.locator('article.host [role="meter"][aria-label="instances"][aria-valuenow="1"]').waitFor({ timeout: 15_000 });
    await shot(page, 'hosts', async () => {
      assert.doesNotMatch(await page.locator('article.host').first().innerText(), /\b0 cached layers/);
    });
  });

  it("draws the Adventure Works farm's call graph", async () => {
    const applied = await promisify(execFile)(process.execPath, [SHOAL, 'apply', join(ROOT, 'examples/adventure-works/farm.ts')], {
      env: { ...process.env, SHOAL_URL: url, SHOAL_STATE: data, SHOAL_TOKEN: '' },
      timeout: 60_000,
    });
    assert.match(applied.stdout, /export order-entry/);
    await page.getByRole('link', { name: 'Farms' }).click();
    const svg = page.locator('svg[data-farm="adventure-works"]');
    await svg.waitFor();
    for (const node of ['payment1', 'payment2', 'processing', 'entry1', 'entry2', 'credit', 'payment-ref', 'export:order-entry']) {
      await svg.locator(`[data-node="${node}"]`).waitFor();
    }
    assert.ok((await svg.locator('.edge-crash').count()) >= 1, 'the crash rule is drawn');
    assert.ok((await svg.locator('.node-par').count()) === 1 && (await svg.locator('.node-or').count()) === 1);
    await shot(page, 'farms', async () => {
      await page.getByText('if payment1 crashes: rebind payment-ref to payment2').waitFor();
    });
  });

  it('scales a service, pauses and resumes an instance, and removes it from the page', async () => {
    await page.getByRole('link', { name: 'Services' }).click();
    const echoRow = page.locator('tr[data-service="echo"]');
    await echoRow.waitFor();
    await echoRow.getByLabel('instances of echo').fill('1');
    await echoRow.getByRole('button', { name: 'Scale' }).click();
    await page.getByRole('status').filter({ hasText: 'scale echo to 1: done' }).waitFor({ timeout: 30_000 });
    const count = async () => ((await (await fetch(`${url}/api/v1/instances`, { headers: bearer() })).json()) as { instances: Array<{ id: string; service: string; routable: boolean }> }).instances.filter((i) => i.service === 'echo' && i.routable);
    await until('echo at one instance', async () => (await count()).length === 1, 20_000, 200);
    const [only] = await count();
    // Live operations: the process driver declares pause only, so the row offers Pause (then
    // Resume) and no snapshot, suspend, fork or migrate; the saved-states table is there, empty.
    const stateOf = async () => ((await (await fetch(`${url}/api/v1/instances`, { headers: bearer() })).json()) as { instances: Array<{ id: string; state: string; liveOps?: string[] }> }).instances.find((i) => i.id === only!.id);
    assert.deepEqual((await stateOf())?.liveOps, ['pause']);
    const row = page.locator(`tr[data-instance="${only!.id}"]`);
    assert.deepEqual(await row.locator('button').allTextContents(), ['Pause', 'Remove']);
    await page.getByRole('heading', { name: 'Saved states' }).waitFor();
    await page.getByText('No saved state').waitFor();
    await page.getByRole('button', { name: `pause instance ${only!.id}` }).click();
    await page.getByRole('status').filter({ hasText: `pause ${only!.id}: done` }).waitFor({ timeout: 30_000 });
    await until('echo paused on its host', async () => (await stateOf())?.state === 'paused', 20_000, 200);
    await page.getByRole('button', { name: `resume instance ${only!.id}` }).click({ timeout: 20_000 });
    await page.getByRole('status').filter({ hasText: `resume ${only!.id}: done` }).waitFor({ timeout: 30_000 });
    await until('echo running again', async () => (await stateOf())?.state === 'ready', 20_000, 200);
    const answer = await fetch(`${url}/s/echo/Echo`, { method: 'POST', headers: bearer(), body: '{"message":"after resume"}' });
    assert.equal(answer.status, 200);
    await page.getByRole('button', { name: `remove instance ${only!.id}` }).click();
    await page.getByRole('status').filter({ hasText: `remove ${only!.id}: done` }).waitFor({ timeout: 30_000 });
    await until('echo without instances', async () => (await count()).length === 0, 20_000, 200);
  });

  it('refuses changes without the CSRF token, from another origin, and after the token is revoked', async () => {
    // From the page itself, the session cookie but no CSRF header.
    const inPage = await page.evaluate(async () => {
      const r = await fetch('/api/v1/services/echo/deployments', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"count":1}' });
      return { status: r.status, body: await r.text() };
    });
    assert.equal(inPage.status, 403, inPage.body);
    assert.match(inPage.body, /x-shoal-csrf/);

    // A page of another origin on the same machine (same site: the cookie goes along) posting a form.
    const before = ((await (await fetch(`${url}/api/v1/deployments?service=echo`, { headers: bearer() })).json()) as { deployments: unknown[] }).deployments.length;
    evil = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<form id="f" method="POST" enctype="text/plain" action="${url}/api/v1/services/echo/deployments"><input name='{"count":1,"x":"' value='"}'></form><script>document.getElementById('f').submit()</script>`);
    });
    await new Promise<void>((r) => evil!.listen(0, '127.0.0.1', r));
    const evilPage = await context!.newPage();
    const posted = evilPage.waitForResponse((r) => r.url().includes('/api/v1/services/echo/deployments'));
    await evilPage.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
    const reply = await posted;
    assert.ok(reply.status() >= 400, `the cross-site POST was answered ${reply.status()}`);
    await evilPage.close();
    const afterCount = ((await (await fetch(`${url}/api/v1/deployments?service=echo`, { headers: bearer() })).json()) as { deployments: unknown[] }).deployments.length;
    assert.equal(afterCount, before, 'no deployment made');

    // With the cookie and the CSRF token but another Origin (node's fetch, no browser rules).
    const made = (await (await fetch(`${url}/api/v1/tokens`, { method: 'POST', headers: bearer(), body: '{"role":"deploy"}' })).json()) as { secret: string; token: { id: string } };
    const login = await fetch(`${url}/ui/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: made.secret }) });
    assert.equal(login.status, 201);
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const { csrf } = (await login.json()) as { csrf: string };
    const crossOrigin = await fetch(`${url}/api/v1/services/echo/scale`, { method: 'PUT', headers: { cookie, 'x-shoal-csrf': csrf, origin: 'http://evil.example', 'content-type': 'application/json' }, body: '{"instances":0}' });
    assert.equal(crossOrigin.status, 403);
    assert.equal((await fetch(`${url}/api/v1/hosts`, { headers: { cookie } })).status, 200);
    assert.equal((await fetch(`${url}/api/v1/audit`, { headers: { cookie } })).status, 403, 'a deploy session is no admin');
    assert.equal((await fetch(`${url}/api/v1/tokens/${made.token.id}`, { method: 'DELETE', headers: bearer() })).status, 200);
    assert.equal((await fetch(`${url}/api/v1/hosts`, { headers: { cookie } })).status, 401, 'revoking the token ends its session');
  });

  it('works from the keyboard and at phone width', async () => {
    await page.goto(`${dashboardUrl}#/hosts`);
    await page.reload(); // focus starts at the top of a freshly loaded page
    await page.locator('article.host').first().waitFor();
    // Tab walks the skip link, then the pages in order; Enter on one opens it.
    const focused: string[] = [];
    for (let i = 0; i < 10 && focused.at(-1) !== 'Services'; i++) {
      await page.keyboard.press('Tab');
      focused.push((await page.evaluate('document.activeElement?.textContent ?? ""')) as string);
    }
    assert.deepEqual(focused.slice(0, 3), ['Skip to content', 'Hosts', 'Services'], focused.join(' | '));
    await page.keyboard.press('Enter');
    await until('the services page', async () => (await page.evaluate('location.hash')) === '#/services', 5000, 50);
    await page.locator('table.instances').waitFor();

    const phone = await context!.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${dashboardUrl}#/hosts`);
    await phone.locator('article.host').first().waitFor();
    await shot(phone, 'phone-hosts', async () => {
      const overflow = (await phone.evaluate('document.documentElement.scrollWidth - window.innerWidth')) as number;
      assert.ok(overflow <= 1, `the page is ${overflow}px wider than the phone`);
    });
    await phone.goto(`${dashboardUrl}#/deployments`);
    await phone.locator('article.deployment').first().waitFor();
    await shot(phone, 'phone-deployments', async () => {
      const overflow = (await phone.evaluate('document.documentElement.scrollWidth - window.innerWidth')) as number;
      assert.ok(overflow <= 1, `the page is ${overflow}px wider than the phone`);
    }, false);
    await phone.close();
  });
});
