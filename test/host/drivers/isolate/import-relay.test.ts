import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createImportRelay } from '../../../../src/host/drivers/isolate/import-relay.ts';

/** A real import endpoint on a unix socket; `handle` answers each call. */
async function withImport(handle: (req: IncomingMessage, res: ServerResponse) => void, body: (socketPath: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-import-'));
  const socketPath = join(dir, 'dep.sock');
  const server = createServer(handle);
  await new Promise<void>((r) => server.listen(socketPath, r));
  try {
    await body(socketPath);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  }
}

describe('isolate import relay', () => {
  it('relays a reply within the bounds', async () => {
    await withImport(
      (req, res) => req.resume().on('end', () => res.end(JSON.stringify({ op: req.url }))),
      async (sock) => {
        const reply = await createImportRelay().call('i1', sock, 'dep', 'hello', '{}');
        assert.equal(reply.status, 200);
        assert.deepEqual(JSON.parse(reply.text), { op: '/hello' });
      },
    );
  });

  it('fails a call whose reply is larger than maxReplyBytes', async () => {
    await withImport(
      (req, res) => {
        req.resume();
        res.write(Buffer.alloc(64 * 1024, 'a'));
        res.write(Buffer.alloc(64 * 1024, 'a'));
        res.end(Buffer.alloc(64 * 1024, 'a'));
      },
      async (sock) => {
        const reply = await createImportRelay({ maxReplyBytes: 1000 }).call('i1', sock, 'dep', 'big', '{}');
        assert.equal(reply.status, 502);
        assert.match(reply.text, /larger than 1000 bytes/);
      },
    );
  });

  it('fails a call that gets no reply in time', async () => {
    await withImport(
      (req) => req.resume(), // never answers
      async (sock) => {
        const reply = await createImportRelay({ timeoutMs: 200 }).call('i1', sock, 'dep', 'slow', '{}');
        assert.equal(reply.status, 504);
        assert.match(reply.text, /no reply within 200 ms/);
      },
    );
  });

  it('caps the calls one instance has in flight, not other instances', async () => {
    const held: ServerResponse[] = [];
    await withImport(
      (req, res) => {
        req.resume();
        held.push(res);
      },
      async (sock) => {
        const relay = createImportRelay({ maxInFlight: 2 });
        const first = [relay.call('i1', sock, 'dep', 'a', '{}'), relay.call('i1', sock, 'dep', 'a', '{}')];
        const third = await relay.call('i1', sock, 'dep', 'a', '{}');
        assert.equal(third.status, 429);
        assert.match(third.text, /2 import calls in flight/);
        const other = relay.call('i2', sock, 'dep', 'a', '{}');
        while (held.length < 3) await new Promise((r) => setTimeout(r, 10));
        for (const res of held) res.end('{}');
        assert.deepEqual((await Promise.all([...first, other])).map((r) => r.status), [200, 200, 200]);
        // Finished calls free their slots.
        const again = relay.call('i1', sock, 'dep', 'a', '{}');
        while (held.length < 4) await new Promise((r) => setTimeout(r, 10));
        held[3]?.end('{}');
        assert.equal((await again).status, 200);
      },
    );
  });
});
