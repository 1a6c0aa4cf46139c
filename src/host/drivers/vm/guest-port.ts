// The loopback port QEMU's user network forwards into the guest: waiting for the guest's
// first HTTP answer on it. The instance socket is relayed to it by
// shoal-port-bridge (native/port-bridge, started with QEMU: see index.ts).
import { connect } from 'node:net';
import { ShoalError } from '../../../protocol/index.ts';

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
