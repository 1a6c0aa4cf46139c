// The instance socket contract for a VM: the host-owned Unix socket at spec.listenSocket
// (as every driver makes it), each connection piped to the loopback port QEMU's user
// network forwards into the guest (QEMU 7.2 has no Unix hostfwd). The listener lives in
// the agent's process, so it ends with the driver (recover() cannot re-attach a VM).
import { connect, createServer, type Server, type Socket } from 'node:net';
import { chmod } from 'node:fs/promises';
import { assertHostOwnedDir, removeStaleSocket } from '../shared/listener.ts';
import { dirname } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';

export interface Bridge {
  /** Points new connections at another guest port (after a restore on a new port). */
  retarget(port: number): void;
  close(): Promise<void>;
}

export async function createBridge(path: string, port: number): Promise<Bridge> {
  await assertHostOwnedDir(dirname(path));
  await removeStaleSocket(path);
  let target = port;
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect({ host: '127.0.0.1', port: target });
    open.add(client);
    open.add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600); // only the host connects
  return {
    retarget: (p) => {
      target = p;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port the OS says is free now (QEMU binds it a moment later; start retries on a clash). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Waits until the guest answers HTTP on the forwarded port (any status: the agent's own
 * readiness probe then asks for its 200). QEMU's user network accepts a connection long
 * before the guest listens and holds or drops it, so only an answer counts.
 */
export async function waitHttpAnswer(port: number, gone: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone()) throw new ShoalError('unavailable', 'the VM exited before its service answered');
    if (await answersHttp(port, Math.min(2000, deadline - Date.now()))) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new ShoalError('timeout', `the VM's service did not answer HTTP within ${timeoutMs} ms`);
}

function answersHttp(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write('GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n'));
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.length >= 5) done(got.startsWith('HTTP/'));
    });
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}
