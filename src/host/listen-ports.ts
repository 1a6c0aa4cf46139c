// A restarted host keeps its addresses: the ports it listened on are recorded in its data
// dir, and a host asked for "any port" (0) takes the recorded one again when it is free.
// Providers keep routing to a host's data-plane address (its instances' endpoint
// references name it), so a host that came back on a new port would have them send every
// message to a dead address until they learned the new one.
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './ports.ts';

export interface RecordedPorts {
  control?: number;
  data?: number;
}

const FILE = 'ports.json';

export async function readPorts(dataDir: string, log: Logger): Promise<RecordedPorts> {
  let text: string;
  try {
    text = await readFile(join(dataDir, FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: String(e) }, 'cannot read the recorded ports; listening on new ones');
    return {};
  }
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const port = (x: unknown) => (Number.isInteger(x) && (x as number) > 0 && (x as number) < 65536 ? (x as number) : undefined);
    const out: RecordedPorts = {};
    const control = port(v.control);
    const data = port(v.data);
    if (control !== undefined) out.control = control;
    if (data !== undefined) out.data = data;
    return out;
  } catch (e) {
    log.warn({ err: String(e) }, 'the recorded ports are not JSON; listening on new ones');
    return {};
  }
}

export async function writePorts(dataDir: string, ports: RecordedPorts): Promise<void> {
  const file = join(dataDir, FILE);
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, JSON.stringify(ports), { mode: 0o600 });
  await rename(tmp, file);
}

/**
 * Listens on the recorded port when asked for any port (0) and one is recorded; if it is
 * taken now, on a new one. `listenOn` resolves with the port it got.
 */
export async function listenPreferring(requested: number, recorded: number | undefined, listenOn: (port: number) => Promise<number>, log: Logger, what: string): Promise<number> {
  if (requested !== 0 || recorded === undefined) return listenOn(requested);
  try {
    return await listenOn(recorded);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' && code !== 'EACCES') throw e;
    log.warn({ port: recorded, err: code }, `the ${what} port of the last run is taken; listening on a new one`);
    return listenOn(0);
  }
}
