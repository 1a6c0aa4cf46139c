// `shoal apply` / `shoal graph` without the CLI around them: load a farm script (Node
// strips its types), find the graph it built, and (apply) type-check it first and send it
// to a provider's farms API.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ShoalError, codeForStatus, isErrorCode } from '../protocol/index.ts';
import type { FarmGraph } from './graph.ts';
import { typeCheckFarm } from './typecheck.ts';

/** Imports `file` and returns the farm graph it exports (default export, or a named `farm`). */
export async function loadFarm(file: string): Promise<FarmGraph> {
  const url = pathToFileURL(resolve(file)).href;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof ShoalError) throw e;
    throw new ShoalError('invalid', `farm script ${file}: ${(e as Error).message}`, { field: 'file', cause: e });
  }
  const graph = [mod.default, mod.farm].find((v) => (v as FarmGraph | undefined)?.format === 'shoal.farm/v1') as FarmGraph | undefined;
  if (graph === undefined) {
    throw new ShoalError('invalid', `farm script ${file}: export the graph: \`export default farm('name', () => { ... })\``, { field: 'file' });
  }
  return graph;
}

export interface ApplyOptions {
  /** The provider's URL. */
  url: string;
  /** An API token with the deploy role (sent as Authorization: Bearer). */
  token?: string;
  fetch?: typeof fetch;
}

export interface ApplyOutcome {
  farm: string;
  changed: boolean;
  changes: Array<{ kind: string; what: string; id: string }>;
  services: string[];
}

/** Type-checks, loads and applies a farm script. A script that does not check is refused with the compiler's diagnostics. */
export async function applyFarm(file: string, options: ApplyOptions): Promise<ApplyOutcome> {
  const checked = await typeCheckFarm(file);
  if (!checked.ok) {
    throw new ShoalError('invalid', `farm script ${file} does not type-check; nothing was applied:\n${checked.diagnostics}`, { field: 'file', detail: checked.diagnostics });
  }
  const graph = await loadFarm(file);
  const f = options.fetch ?? fetch;
  const target = `${options.url.replace(/\/+$/, '')}/api/v1/farms/${encodeURIComponent(graph.name)}`;
  let res: Response;
  try {
    const auth: Record<string, string> = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
    res = await f(target, { method: 'PUT', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(graph) });
  } catch (e) {
    throw new ShoalError('unavailable', `cannot reach the provider at ${options.url} (${(e as Error).message})`);
  }
  const text = await res.text();
  if (!res.ok) {
    let err: { error?: { code?: string; message?: string; field?: string } } = {};
    try {
      err = JSON.parse(text) as typeof err;
    } catch {
      // not JSON
    }
    const given = err.error?.code;
    const code = given !== undefined && isErrorCode(given) ? given : codeForStatus(res.status);
    throw new ShoalError(code, `apply ${graph.name}: ${err.error?.message ?? text.slice(0, 500)}`, err.error?.field === undefined ? {} : { field: err.error.field });
  }
  return JSON.parse(text) as ApplyOutcome;
}
