// Shared by the driver tests: the fixture service's root file systems.
import { copyFile, mkdir } from 'node:fs/promises';
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
