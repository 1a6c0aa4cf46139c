import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBindAddress, isLoopbackHost, readTlsIdentity } from '../../src/http/index.ts';

test('loopback is 127/8, ::1 and localhost; anything else is not', () => {
  for (const h of ['127.0.0.1', '127.0.0.2', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.com', '128.0.0.1', '::ffff:10.0.0.1']) assert.equal(isLoopbackHost(h), false, h);
});

test('a non-loopback bind without TLS is refused; with TLS it passes; --insecure passes with a warning', () => {
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  assert.throws(
    () => checkBindAddress('the provider', '0.0.0.0', { tls: false, warn }),
    (e: unknown) => (e as { code?: string }).code === 'invalid' && (e as { field?: string }).field === 'listen' && /the provider would listen on 0\.0\.0\.0/.test((e as Error).message),
  );
  assert.deepEqual(warnings, []);
  checkBindAddress('the provider', '0.0.0.0', { tls: true, warn });
  checkBindAddress('the provider', '127.0.0.1', { tls: false, warn });
  assert.deepEqual(warnings, []);
  checkBindAddress('the store', '10.1.2.3', { tls: false, insecure: true, warn });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]!, /the store listens on 10\.1\.2\.3 over plain HTTP \(--insecure\)/);
});

test('--tls-cert and --tls-key come together and must be PEM files', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-tlsid-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'c.pem'), '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n');
  await writeFile(join(dir, 'k.pem'), '-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n');
  await writeFile(join(dir, 'junk'), 'not pem');
  assert.equal(readTlsIdentity({}), undefined);
  const field = (f: string) => (e: unknown) => (e as { field?: string }).field === f;
  assert.throws(() => readTlsIdentity({ certFile: join(dir, 'c.pem') }), field('tls-key'));
  assert.throws(() => readTlsIdentity({ keyFile: join(dir, 'k.pem') }), field('tls-cert'));
  assert.throws(() => readTlsIdentity({ certFile: join(dir, 'missing'), keyFile: join(dir, 'k.pem') }), field('tls-cert'));
  assert.throws(() => readTlsIdentity({ certFile: join(dir, 'c.pem'), keyFile: join(dir, 'junk') }), field('tls-key'));
  const id = readTlsIdentity({ certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') });
  assert.match(id!.cert, /BEGIN CERTIFICATE/);
  assert.match(id!.key, /BEGIN PRIVATE KEY/);
});
