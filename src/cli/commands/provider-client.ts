// How the client commands (service, hosts, deployments, call, ps) reach a provider:
// --url, else SHOAL_URL, else http://127.0.0.1:7070; JSON in and out; a non-2xx reply
// becomes a ShoalError with the provider's code, so the CLI exits with its category.
import { fetch, type Response } from 'undici';
import { ShoalError } from '../../protocol/index.ts';
import { errorFrom, providerUrl, type ClientOptions } from './client-options.ts';
import { authHeader } from './credentials.ts';

export { errorFrom, providerUrl, withProviderOptions, type ClientOptions } from './client-options.ts';

export async function providerRequest<T>(opts: ClientOptions, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const base = providerUrl(opts);
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers: { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...authHeader(opts), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
    throw new ShoalError('unavailable', `cannot reach the provider at ${base} (${cause}); is \`shoal up\` or \`shoal provider\` running? (--url / SHOAL_URL)`);
  }
  const text = await res.text();
  if (!res.ok) throw errorFrom(res.status, text, `${method} ${path}`);
  return (text === '' ? undefined : JSON.parse(text)) as T;
}

/** "3 s ago", "2 min ago". */
export function ago(epochMs: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
