// The server-sent-events reader: the WHATWG line rules (CRLF, CR and LF line ends, lines
// split across chunks, comments, multi-line data, ids), and the reader against a real
// server: events in order, Last-Event-ID sent, a non-stream reply refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEventParser, readEventStream, type StreamEvent } from '../../src/http/index.ts';

test('parser: line ends, split chunks, comments, multi-line data, ids and event names', () => {
  const got: StreamEvent[] = [];
  const p = createEventParser((e) => got.push(e));
  for (const piece of ['\ufeff: keep-alive\n', 'id: 1\r', '\ndata: a\r\ndata:b\r', '\r', 'event: crashed\nda', 'ta: {"x":1}\n\n', 'data\n\n', 'id: 2\n\n']) p.push(piece);
  assert.deepEqual(got, [
    { event: 'message', data: 'a\nb', id: '1' },
    { event: 'crashed', data: '{"x":1}', id: '1' },
    { event: 'message', data: '', id: '1' },
  ]);
  assert.throws(() => createEventParser(() => {}, 10).push('data: ' + 'x'.repeat(20)), /longer than 10/);
});

test('readEventStream: events arrive in order with their ids; Last-Event-ID is sent; a non-stream reply is refused', async (t) => {
  let lastSeen: string | undefined;
  const server = createServer((req, res) => {
    if (req.url === '/plain') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    lastSeen = req.headers['last-event-id'] as string | undefined;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('id: 7\ndata: {"n":1}\n\n');
    setTimeout(() => res.end('id: 8\ndata: {"n":2}\n\n'), 20);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const events: StreamEvent[] = [];
  let opened = false;
  await readEventStream(`${base}/events`, { lastEventId: '6', onOpen: () => (opened = true), onEvent: (e) => events.push(e) });
  assert.equal(opened, true);
  assert.equal(lastSeen, '6');
  assert.deepEqual(events.map((e) => [e.id, JSON.parse(e.data).n]), [['7', 1], ['8', 2]]);
  await assert.rejects(readEventStream(`${base}/plain`, { onEvent: () => assert.fail('no events') }), /HTTP 200 application\/json/);
  // Stopped by its signal while the server is silent.
  const stop = new AbortController();
  const silent = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders());
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { silent.closeAllConnections(); silent.close(() => r()); }));
  const reading = readEventStream(`http://127.0.0.1:${(silent.address() as AddressInfo).port}/`, { signal: stop.signal, onOpen: () => stop.abort(), onEvent: () => {} });
  await assert.rejects(reading);
});
