// Component images (issue 13): a shoal/service bundle as an OCI image of ONE layer and no
// runtime template, for drivers that bring their own runtime (isolate: V8 isolates in
// the host's runner; wasm: QuickJS compiled to WebAssembly, whose state can be captured). The image config says which driver runs it and where its entry is:
//   Labels["dev.shoal.driver"] = "isolate"
//   Labels["dev.shoal.entry"]  = "/app/service.mjs"   (also its Cmd)
// The provider places a component image only on hosts that offer that driver.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMPONENT_DRIVER_LABEL, COMPONENT_ENTRY_LABEL, ShoalError, type ImageConfig, type ImageRef } from '../protocol/index.ts';
import { buildTemplate, type BuildResult } from './image-build.ts';
import type { RegistryClient } from './registry-client.ts';
import { bundleService, type BundleResult } from './sdk-bundle.ts';

export const DRIVER_LABEL = COMPONENT_DRIVER_LABEL;
export const ENTRY_LABEL = COMPONENT_ENTRY_LABEL;

/** Drivers that run a shoal/service bundle without a runtime in the image. */
export const COMPONENT_DRIVERS = ['isolate', 'wasm'] as const;
export type ComponentDriver = (typeof COMPONENT_DRIVERS)[number];

export function isComponentDriver(name: string | undefined): name is ComponentDriver {
  return (COMPONENT_DRIVERS as readonly string[]).includes(name ?? '');
}

/** The driver a component image names in its config, or undefined for an ordinary image. */
export function componentDriverOf(config: Pick<ImageConfig, 'config'>): string | undefined {
  return config.config?.Labels?.[DRIVER_LABEL];
}

export async function buildComponentImage(options: {
  client: RegistryClient;
  entry: string;
  ref: ImageRef;
  driver: string;
  env?: string[];
  workDir?: string;
}): Promise<BuildResult & { bundle: BundleResult }> {
  if (!isComponentDriver(options.driver)) {
    throw new ShoalError('invalid', `driver ${options.driver} does not run component images (those that do: ${COMPONENT_DRIVERS.join(', ')})`, { field: 'driver' });
  }
  const dir = await mkdtemp(join(options.workDir ?? tmpdir(), 'shoal-component-'));
  try {
    const bundle = await bundleService({ entry: options.entry, outDir: join(dir, 'root') });
    const built = await buildTemplate({
      client: options.client,
      rootfs: join(dir, 'root'),
      ref: options.ref,
      process: {
        // No runtime in the image: the driver runs the entry module itself.
        cmd: [bundle.entry],
        workdir: '/app',
        ...(options.env ? { env: options.env } : {}),
        labels: { [DRIVER_LABEL]: options.driver, [ENTRY_LABEL]: bundle.entry },
      },
      ...(options.workDir ? { workDir: options.workDir } : {}),
    });
    return { ...built, bundle };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
