// Component images (issue 13): a WebAssembly module as an OCI image, one layer holding
// only the module, no template. The config says which driver runs it and where the
// module is: Labels["dev.shoal.driver"] = "wasm", Labels["dev.shoal.entry"] = its path
// (also the image's Cmd, which hosts hand the driver as args[0]). The isolate driver's
// images use the same two labels with "isolate".
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ShoalError, type ImageRef } from '../protocol/index.ts';
import { buildTemplate, type BuildResult } from './image-build.ts';
import type { RegistryClient } from './registry-client.ts';

export const COMPONENT_LABELS = { driver: 'dev.shoal.driver', entry: 'dev.shoal.entry' } as const;
const WASM_ENTRY = '/component.wasm';
const WASM_MAGIC = Buffer.from([0x00, 0x61, 0x73, 0x6d]);

/** Builds and pushes the component image of a `.wasm` module (or `.wat` text, compiled with wabt). */
export async function buildWasmComponentImage(options: { client: RegistryClient; module: string; ref: ImageRef; workDir?: string }): Promise<BuildResult> {
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'shoal-component-'));
  try {
    const root = join(work, 'root');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(root);
    const target = join(root, WASM_ENTRY);
    if (options.module.endsWith('.wat')) await writeFile(target, await watToWasm(options.module));
    else await copyFile(options.module, target);
    const head = (await readFile(target)).subarray(0, 4);
    if (!head.equals(WASM_MAGIC)) throw new ShoalError('invalid', `${options.module} is not a WebAssembly module (no \\0asm header)`, { field: 'path' });
    return await buildTemplate({
      client: options.client,
      rootfs: root,
      ref: options.ref,
      process: { cmd: [WASM_ENTRY], labels: { [COMPONENT_LABELS.driver]: 'wasm', [COMPONENT_LABELS.entry]: WASM_ENTRY } },
      workDir: work,
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function watToWasm(path: string): Promise<Uint8Array> {
  const { default: init } = await import('wabt');
  const wabt = await init();
  const parsed = wabt.parseWat(path, await readFile(path, 'utf8'));
  try {
    parsed.resolveNames();
    parsed.validate();
    return parsed.toBinary({}).buffer;
  } catch (e) {
    throw new ShoalError('invalid', `${path}: ${(e as Error).message}`, { field: 'path', cause: e });
  } finally {
    parsed.destroy();
  }
}
