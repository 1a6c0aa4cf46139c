// A service with in-memory state, for the vm driver's capture/restore test: POST /Count
// adds one and answers the count; the count lives only in the guest's RAM.
import { createServer } from 'node:http';

let count = 0;
const bootId = Math.random().toString(36).slice(2);
const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/Count') count += 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ count, bootId }));
  });
});
server.listen({ fd: 3 });
