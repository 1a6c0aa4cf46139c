// XenoServer's Table 1 for Shoal: how small a service's overlay is next to the whole
// image it runs from. Rows: the echo service on template://node/24, and nginx installed
// (with apt, from the Debian archive this machine uses) on template://debian/bookworm.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { aptInstallInto, buildImage, buildTemplate, buildNodeTemplate, type RegistryClient } from '../src/image/index.ts';
import { parseImageRef } from '../src/protocol/image-ref.ts';

const run = promisify(execFile);

export interface OverlayRow {
  service: string;
  template: string;
  overlayBytes: number;
  imageBytes: number;
  overlayUncompressedBytes: number;
  imageUncompressedBytes: number;
  /** overlay / image, compressed (what moves on the wire). */
  proportion: number;
  /** overlay / image, unpacked (the file-system view, as in the paper). */
  proportionUncompressed: number;
  entries: number;
  whiteouts: number;
}

function row(service: string, template: string, b: Awaited<ReturnType<typeof buildImage>>): OverlayRow {
  return {
    service,
    template,
    overlayBytes: b.layer.size,
    imageBytes: b.imageSize,
    overlayUncompressedBytes: b.layer.uncompressedSize,
    imageUncompressedBytes: b.imageUncompressedSize,
    proportion: b.layer.size / b.imageSize,
    proportionUncompressed: b.layer.uncompressedSize / b.imageUncompressedSize,
    entries: b.layer.entries,
    whiteouts: b.layer.whiteouts,
  };
}

export async function echoOverlayRow(client: RegistryClient): Promise<OverlayRow> {
  const template = await buildNodeTemplate({ client });
  const b = await buildImage({
    client,
    source: fileURLToPath(new URL('../examples/echo/rootfs', import.meta.url)),
    template: parseImageRef(template.name),
    ref: parseImageRef('bench/echo:1'),
    owner: { uid: 0, gid: 0 },
    process: { cmd: ['/usr/local/bin/node', '/app/server.mjs'] },
  });
  return row('echo (node:http)', template.name, b);
}

/**
 * `debianRoot` is a debootstrapped tree that was pushed as template://debian/bookworm;
 * nginx goes into a copy of it, and the overlay is the difference (whole-root build,
 * so files apt removed become whiteouts).
 */
export async function nginxOverlayRow(client: RegistryClient, debianRoot: string): Promise<OverlayRow> {
  const work = await mkdtemp(join(tmpdir(), 'shoal-bench-nginx-'));
  try {
    const copy = join(work, 'rootfs');
    await run('cp', ['-a', debianRoot, copy]);
    await aptInstallInto(copy, ['nginx-light']);
    const b = await buildImage({
      client,
      source: copy,
      template: parseImageRef('template://debian/bookworm'),
      ref: parseImageRef('bench/nginx:1'),
      wholeRoot: true,
      process: { cmd: ['/usr/sbin/nginx', '-g', 'daemon off;'] },
    });
    return row('nginx (apt install nginx-light)', 'template://debian/bookworm', b);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function pushDebianTemplate(client: RegistryClient, root: string) {
  return buildTemplate({ client, rootfs: root, ref: parseImageRef('template://debian/bookworm'), process: { cmd: ['/bin/bash'] } });
}
