// The client commands of `shoal` as a user runs them: the CLI as a child process against
// a real provider (in-process, on an OS-chosen port, with fake hosts and a tiny real
// store). Each command's --json output is checked against what the provider holds, and
// failures exit non-zero with their category's code and a message that says what failed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFarm, type Farm } from '../provider/fixtures/provider.ts';
import { ECHO_TEST_SERVICE } from '../provider/fixtures/fake-host.ts';
import { freePort } from '../fixtures/free-port.ts';

const SHOAL = fileURLToPath(new URL('../../bin/shoal.js', import.meta.url));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON. */
  json: any;
}

/** The admin token of the provider the current test started (the CLI gets it as SHOAL_TOKEN). */
let adminToken: string | undefined;

/** Runs `shoal <args>` to completion; never rejects (the exit code is part of the result). */
function shoal(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.SHOAL_URL;
    delete env.SHOAL_TOKEN;
    if (adminToken !== undefined) env.SHOAL_TOKEN = adminToken;
    execFile(process.execPath, [SHOAL, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr, json });
    });
  });
}

async function farmWithHost(t: Parameters<typeof startFarm>[0]): Promise<{ farm: Farm; url: string; dir: string }> {
  const farm = await startFarm(t, { register: false });
  adminToken = farm.token;
  for (const h of farm.hosts) await farm.provider.registerHost({ controlUrl: h.controlUrl, token: h.token });
  const dir = await mkdtemp(join(tmpdir(), 'shoal-cli-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return { farm, url: farm.provider.url, dir };
}

test('service add, ls, show and rm, with --json and as text', async (t) => {
  const { url, dir } = await farmWithHost(t);
  const file = join(dir, 'echo.json');
  await writeFile(file, JSON.stringify(ECHO_TEST_SERVICE));

  const add = await shoal(['service', 'add', file, '--url', url]);
  assert.equal(add.code, 0, add.stderr);
  assert.match(add.stdout, /^registered echo 1 \(operations: Echo, Write, Slow, Who, Html, Crash, Vanish, Mimic\)/);

  const ls = await shoal(['service', 'ls', '--url', url, '--json']);
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(
    ls.json.services.map((s: { name: string; version: string; ready: number }) => [s.name, s.version, s.ready]),
    [['echo', '1', 0]],
  );
  const lsText = await shoal(['service', 'ls', '--url', url]);
  assert.match(lsText.stdout, /^NAME\s+VERSION\s+READY\s+QUEUED\s+IMAGE\s+OPERATIONS\necho\s+1\s+0\s+0\s+echo:1\s+Echo, Write/);

  const show = await shoal(['service', 'show', 'echo', '--url', url, '--json']);
  assert.equal(show.code, 0, show.stderr);
  assert.equal(show.json.service.name, 'echo');
  assert.deepEqual(Object.keys(show.json.service.description.operations), Object.keys(ECHO_TEST_SERVICE.operations));
  assert.deepEqual(show.json.versions.map((v: { version: string; current: boolean }) => [v.version, v.current]), [['1', true]]);

  const rm = await shoal(['service', 'rm', 'echo', '--url', url, '--json']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(rm.json.removed, 'echo');
  const after = await shoal(['service', 'ls', '--url', url, '--json']);
  assert.deepEqual(after.json.services, []);
  const gone = await shoal(['service', 'show', 'echo', '--url', url]);
  assert.equal(gone.code, 3, 'not-found exits 3');
  assert.match(gone.stderr, /^shoal: GET \/api\/v1\/services\/echo: .*echo/);
});

test('call deploys on the first message; ps, deployments and hosts show it', async (t) => {
  const { farm, url, dir } = await farmWithHost(t);
  const file = join(dir, 'echo.json');
  await writeFile(file, JSON.stringify(ECHO_TEST_SERVICE));
  assert.equal((await shoal(['service', 'add', file, '--url', url, '--json'])).code, 0);

  const call = await shoal(['call', 'echo', 'Echo', '{"message":"hello"}', '--url', url, '--json']);
  assert.equal(call.code, 0, call.stderr);
  assert.deepEqual(call.json, { message: 'hello' });
  const pretty = await shoal(['call', 'echo', 'Echo', '{"message":"again"}', '--url', url]);
  assert.equal(pretty.stdout, '{\n  "message": "again"\n}\n');

  const [host] = farm.hosts;
  const ps = await shoal(['ps', '--url', url, '--json']);
  assert.equal(ps.code, 0, ps.stderr);
  const instances = ps.json.instances as Array<{ service: string; hostId: string }>;
  assert.equal(instances.length, 1, ps.stdout);
  assert.equal(instances[0]!.service, 'echo');
  assert.equal(instances[0]!.hostId, host!.id);

  const deployments = await shoal(['deployments', 'echo', '--url', url, '--json']);
  assert.equal(deployments.code, 0, deployments.stderr);
  const ds = deployments.json.deployments as Array<{ service: string; state: string; hostId: string }>;
  assert.deepEqual(ds.map((d) => [d.service, d.state, d.hostId]), [['echo', 'ready', host!.id]]);

  const hosts = await shoal(['hosts', '--url', url, '--json']);
  assert.equal(hosts.code, 0, hosts.stderr);
  assert.deepEqual(hosts.json.hosts.map((h: { id: string }) => h.id), [host!.id]);
});

test("call's own argument reader (no commander on its path) refuses what commander would, and --help still lists it", async () => {
  const unknown = await shoal(['call', 'echo', 'Echo', '--bogus']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Unknown option '--bogus'.*\(field: argv\)/);
  const missing = await shoal(['call', 'echo']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing argument 'operation'/);
  const extra = await shoal(['call', 'echo', 'Echo', '{}', 'more']);
  assert.equal(extra.code, 2);
  assert.match(extra.stderr, /too many arguments: \["more"\]/);
  const json = await shoal(['call', 'echo', 'Echo', '--json', '--url', 'ftp://x']);
  assert.equal(json.code, 2);
  assert.equal(JSON.parse(json.stderr).error.field, 'url');
  const help = await shoal(['call', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: shoal call \[options\] <service> <operation> \[json\]/);
  assert.match(help.stdout, /--token <token>/);
});

test('failures exit with their category and say what failed', async (t) => {
  const { url, dir } = await farmWithHost(t);
  const file = join(dir, 'echo.json');
  await writeFile(file, JSON.stringify(ECHO_TEST_SERVICE));
  assert.equal((await shoal(['service', 'add', file, '--url', url])).code, 0);

  // A service or operation that is not there: 3, naming it.
  const noOp = await shoal(['call', 'echo', 'Nope', '--url', url]);
  assert.equal(noOp.code, 3);
  assert.match(noOp.stderr, /^shoal: service echo has no operation "Nope" \(it has: Echo, /);
  // A message the schema refuses: 2, naming the field; with --json the error is JSON on stderr.
  const bad = await shoal(['call', 'echo', 'Echo', '{"message":1}', '--url', url, '--json']);
  assert.equal(bad.code, 2);
  const body = JSON.parse(bad.stderr) as { error: { code: string; field: string; message: string } };
  assert.equal(body.error.code, 'invalid');
  assert.equal(body.error.field, '/message');
  // Not JSON at all: refused before anything is sent.
  const notJson = await shoal(['call', 'echo', 'Echo', '{oops', '--url', url]);
  assert.equal(notJson.code, 2);
  assert.match(notJson.stderr, /the message is not JSON.*\(field: json\)/);
  // A description file that is not JSON: 2, naming the file.
  const broken = join(dir, 'broken.json');
  await writeFile(broken, '{"name":');
  const add = await shoal(['service', 'add', broken, '--url', url]);
  assert.equal(add.code, 2);
  assert.match(add.stderr, /broken\.json is not JSON/);
  // A description the provider refuses: 2, with the provider's field.
  await writeFile(broken, JSON.stringify({ ...ECHO_TEST_SERVICE, name: 'Not A Name' }));
  const refused = await shoal(['service', 'add', broken, '--url', url]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^shoal: POST \/api\/v1\/services: .*\(field: \/name\)/);
  // No provider there: 5 (unavailable), saying where it looked.
  const closed = `http://127.0.0.1:${await freePort()}`;
  const down = await shoal(['hosts', '--url', closed]);
  assert.equal(down.code, 5);
  assert.match(down.stderr, new RegExp(`cannot reach the provider at ${closed.replace(/[.]/g, '\\.')}`));
  // A path that is not there: 3, naming it (before any store is asked).
  const missing = join(dir, 'no-such-dir');
  const build = await shoal(['image', 'build', missing, '--template', 'template://node/24', '--tag', 'x:1', '--store', closed]);
  assert.equal(build.code, 3, build.stderr);
  assert.match(build.stderr, /no-such-dir: no such file or directory \(field: path\)/);
  // A driver no host code has: 2, listing the ones there are (before anything starts).
  const driver = await shoal(['up', '--driver', 'docker', '--data', join(dir, 'up-state'), '--listen', '127.0.0.1:0']);
  assert.equal(driver.code, 2);
  assert.match(driver.stderr, /--driver must be one of .*runc.*, got "docker" \(field: driver\)/);
  // Usage errors: 2, and commander's message.
  const usage = await shoal(['service', 'show']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /missing required argument 'name'/);
  const badUrl = await shoal(['hosts', '--url', 'not a url']);
  assert.equal(badUrl.code, 2);
  assert.match(badUrl.stderr, /url/);
});
