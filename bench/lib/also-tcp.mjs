// Preload for the bench's "direct" twin: every node:http server the program creates also
// serves the connections of a TCP listener on 127.0.0.1:$BENCH_TCP_PORT (the same server
// object, so the same work per request), because wrk cannot reach a Unix socket.
//   BENCH_TCP_PORT=… node --import ./bench/lib/also-tcp.mjs examples/echo/rootfs/app/server.mjs
import http from 'node:http';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';

const port = Number(process.env.BENCH_TCP_PORT);
const original = http.createServer;
http.createServer = function createServer(...args) {
  const server = original.apply(this, args);
  const tcp = net.createServer({ noDelay: true }, (socket) => server.emit('connection', socket));
  tcp.listen(port, '127.0.0.1', () => process.stdout.write(`tcp ${port}\n`));
  server.once('close', () => tcp.close());
  return server;
};
syncBuiltinESMExports();
