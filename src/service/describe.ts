// Describe-only mode: `shoal deploy` learns a service's definition from the very module
// that serves it, without serving. It runs the module in a child process with
// SHOAL_DESCRIBE_TO=<file>; serve() then writes the definition's description there and
// returns at once, listening on nothing. An environment variable (not a global) because
// the module may import its own copy of shoal/service (an installed package), which a
// flag set by the CLI's copy would never reach; a child (not an import in the CLI)
// because the module's top-level code may open connections or timers the CLI cannot stop.
import { writeFile } from 'node:fs/promises';
import type { AnyService } from './define.ts';
import { toServiceDescription } from './define.ts';

export const DESCRIBE_ENV = 'SHOAL_DESCRIBE_TO';

/** The file to describe into, when this process was started to describe its service. */
export function describeTarget(): string | undefined {
  const file = process.env[DESCRIBE_ENV];
  return file === undefined || file === '' ? undefined : file;
}

/**
 * Writes the description (image defaulting to name:version: deploy names the image it
 * builds) to `file`, which must not exist yet (the caller made its directory), and
 * returns a service that serves nothing.
 */
export async function describeOnly(def: AnyService, file: string): Promise<{ readonly socketPath: string; readonly inFlight: number; close(): Promise<void> }> {
  const description = toServiceDescription(def, { image: def.image ?? `${def.name}:${def.version}` });
  await writeFile(file, JSON.stringify(description), { flag: 'wx', mode: 0o600 });
  return { socketPath: '', inFlight: 0, close: async () => {} };
}
