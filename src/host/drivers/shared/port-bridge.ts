// The $PORT contract (InstanceSpec.tcpPort): drivers run native/port-bridge in front of a
// program that listens on TCP instead of the inherited socket. Each instance gets its own
// host-owned copy of the binary in its driver dir, which the instance's user (or user
// namespace) can reach: the build cache may sit under a 0700 home.
import { chmod, copyFile, mkdir, rename, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ensurePortBridge } from './native.ts';

/** The copy's path; kept when present (a prepared container already has it bound). */
export async function portBridgeCopy(stateDir: string, cacheDir: string | undefined): Promise<string> {
  const dest = join(stateDir, 'port-bridge');
  if (await stat(dest).then(() => true, () => false)) return dest;
  const built = await ensurePortBridge(cacheDir === undefined ? {} : { cacheDir });
  await mkdir(stateDir, { recursive: true });
  const tmp = `${dest}.tmp`;
  await copyFile(built, tmp);
  await chmod(tmp, 0o555);
  await rename(tmp, dest);
  return dest;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the process driver has no network namespace to give each instance its own). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
