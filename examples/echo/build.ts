// Builds the echo image from its TypeScript source: the service, shoal/service and
// TypeBox bundled into one small overlay on the node template (src/image/sdk-bundle.ts).
import { fileURLToPath } from 'node:url';
import { buildServiceImage } from '../../src/image/index.ts';
import type { BuildResult, RegistryClient } from '../../src/image/index.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import { ECHO_IMAGE } from './echo.ts';

export const ECHO_ENTRY = fileURLToPath(new URL('./service.ts', import.meta.url));

export interface BuildEchoOptions {
  /** Default template://node/<this Node's major>. */
  template?: string;
  /** Default echo:1. */
  tag?: string;
}

/** Builds and pushes the echo image; returns the build and what the bundle holds. */
export async function buildEchoImage(client: RegistryClient, options: BuildEchoOptions = {}): Promise<BuildResult & { bundle: { files: string[]; bytes: number } }> {
  const template = options.template ?? `template://node/${process.versions.node.split('.')[0]}`;
  return buildServiceImage({
    client,
    entry: ECHO_ENTRY,
    template: parseImageRef(template),
    ref: parseImageRef(options.tag ?? ECHO_IMAGE),
    owner: { uid: 0, gid: 0 },
  });
}
