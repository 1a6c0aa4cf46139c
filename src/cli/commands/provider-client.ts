// How the client commands (service, hosts, deployments, call, ps) reach a provider:
// --url, else SHOAL_URL, else http://127.0.0.1:7070; JSON in and out; a non-2xx reply
// becomes a ShoalError with the provider's code, so the CLI exits with its category.
import type { Command } from 'commander';
import { fetch, type Response } from 'undici';
import { codeForStatus, isErrorCode, ShoalError, type ErrorCode } from '../../protocol/index.ts';
import { DEFAULT_URL, normalizeUrl } from './common.ts';
import { authHeader, TOKEN_OPTION_HELP } from './credentials.ts';

export interface ClientOptions {
  url?: string;
  json?: boolean;
  token?: string;
}

export function providerUrl(opts: ClientOptions): string {
  return normalizeUrl(opts.url ?? process.env.SHOAL_URL ?? DEFAULT_URL, 'url');
}

export function withProviderOptions(cmd: Command): Command {
  return cmd.option('--url <url>', `provider URL (env SHOAL_URL, default ${DEFAULT_URL})`).option('--token <token>', TOKEN_OPTION_HELP).option('--json', 'print JSON');
}

/** The provider's error body as a ShoalError (or a generic one for a non-JSON reply). */
export function errorFrom(status: number, text: string, what: string): ShoalError {
  let body: { error?: { code?: string; message?: string; field?: string; detail?: unknown } } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  const e = body?.error;
  const code: ErrorCode = e?.code !== undefined && isErrorCode(e.code) ? e.code : codeForStatus(status);
  const message = e?.message ?? (text.trim().slice(0, 500) || `HTTP ${status}`);
  return new ShoalError(code, what === '' ? message : `${what}: ${message}`, {
    ...(e?.field === undefined ? {} : { field: e.field }),
    ...(e?.detail === undefined ? {} : { detail: e.detail }),
  });
}

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
