// Builds the three Adventure Works images (aw-payment:1, aw-order-processing:1,
// aw-order-entry:1): each service bundled with shoal/service as a small overlay on the
// node template; with --live also Payment and OrderProcessing as wasm components (QuickJS,
// for farm-live.ts). `node examples/adventure-works/build.ts [--live] [store-url]`.
import { fileURLToPath } from 'node:url';
import { buildComponentImage, buildServiceImage, createRegistryClient, type RegistryClient } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';

import { AW_IMAGES, AW_LIVE_IMAGES } from './images.ts';

export { AW_IMAGES, AW_LIVE_IMAGES };

const ENTRIES: Record<keyof typeof AW_IMAGES, string> = {
  payment: fileURLToPath(new URL('./payment.ts', import.meta.url)),
  'order-processing': fileURLToPath(new URL('./order-processing.ts', import.meta.url)),
  'order-entry': fileURLToPath(new URL('./order-entry.ts', import.meta.url)),
};

export async function buildAdventureWorks(client: RegistryClient, options: { template?: string } = {}): Promise<Record<string, { bytes: number }>> {
  const template = parseImageRef(options.template ?? `template://node/${process.versions.node.split('.')[0]}`);
  const out: Record<string, { bytes: number }> = {};
  for (const [service, tag] of Object.entries(AW_IMAGES) as Array<[keyof typeof AW_IMAGES, string]>) {
    const r = await buildServiceImage({ client, entry: ENTRIES[service], template, ref: parseImageRef(tag), owner: { uid: 0, gid: 0 } });
    out[tag] = { bytes: r.bundle.bytes };
  }
  return out;
}

/** Payment and OrderProcessing as wasm component images: the same sources, bundled without a runtime. */
export async function buildAdventureWorksLive(client: RegistryClient): Promise<Record<string, { bytes: number }>> {
  const out: Record<string, { bytes: number }> = {};
  for (const [service, tag] of Object.entries(AW_LIVE_IMAGES) as Array<[keyof typeof AW_LIVE_IMAGES, string]>) {
    const r = await buildComponentImage({ client, entry: ENTRIES[service], ref: parseImageRef(tag), driver: 'wasm' });
    out[tag] = { bytes: r.bundle.bytes };
  }
  return out;
}

if (import.meta.main) {
  const live = process.argv.includes('--live');
  const url = process.argv.slice(2).find((a) => !a.startsWith('--')) ?? process.env.SHOAL_URL ?? 'http://127.0.0.1:7070';
  // Pushing needs a deploy token: SHOAL_TOKEN, else the admin token `shoal up` keeps in ./.shoal/.
  const { resolveToken } = await import('../../src/cli/commands/credentials.ts');
  const token = resolveToken({});
  const client = createRegistryClient({ baseUrl: url, ...(token === undefined ? {} : { token }) });
  const built = { ...(await buildAdventureWorks(client)), ...(live ? await buildAdventureWorksLive(client) : {}) };
  for (const [tag, b] of Object.entries(built)) process.stdout.write(`${tag}: overlay ${b.bytes} bytes\n`);
}
