// Shared by the driver tests: the fixture service's root file systems and an HTTP client
// over Unix sockets.
import { copyFile, mkdir } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembleNodeRootfs } from '../../../src/image/templates/node-rootfs.ts';

export const serviceSource = fileURLToPath(new URL('../fixtures/service.mjs', import.meta.url));
/** How the fixture is started, inside its root. */
export const serviceArgs = ['/usr/local/bin/node', '/app/server.mjs'];

/** Two overlay layers: the node template and an app layer holding /app/server.mjs. */
export async function buildServiceLayers(dir: string): Promise<{ nodeLayer: string; appLayer: string }> {
  const nodeLayer = join(dir, 'node');
  const appLayer = join(dir, 'app');
  await assembleNodeRootfs(nodeLayer);
  await mkdir(join(appLayer, 'app'), { recursive: true });
  await copyFile(serviceSource, join(appLayer, 'app/server.mjs'));
  return { nodeLayer, appLayer };
}

/** One plain directory holding node and /app/server.mjs (for drivers without overlays). */
export async function buildFlatRootfs(dir: string): Promise<string> {
  await assembleNodeRootfs(dir);
  await copyFile(serviceSource, join(dir, 'app/server.mjs'));
  return dir;
}

export interface Reply {
  status: number;
  body: any;
}

export function request(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 5000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest(
      { socketPath, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error(`${method} ${path} timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(data);
  });
}

/** Polls GET /healthz until it answers 200. */
export async function waitReady(socketPath: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const r = await request(socketPath, 'GET', '/healthz', undefined, 1000);
      if (r.status === 200) return;
      last = new Error(`status ${r.status}`);
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`instance at ${socketPath} not ready after ${timeoutMs} ms: ${String(last)}`);
}
