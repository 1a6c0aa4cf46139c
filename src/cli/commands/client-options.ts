// What every client command needs to name a provider and read its errors, kept apart from
// the HTTP client (provider-client.ts, undici) and the protocol door (TypeBox and every
// schema): `shoal call` loads only this, node:http and the error module, so it starts fast.
import type { Command } from 'commander';
import { codeForStatus, isErrorCode, ShoalError, type ErrorCode } from '../../protocol/errors.ts';
import { TOKEN_OPTION_HELP } from './credentials.ts';

export const DEFAULT_URL = 'http://127.0.0.1:7070';

export interface ClientOptions {
  url?: string;
  json?: boolean;
  token?: string;
}

export function normalizeUrl(url: string, field: string): string {
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
    return u.toString().replace(/\/$/, '');
  } catch {
    throw new ShoalError('invalid', `--${field} must be an http(s) URL, got ${JSON.stringify(url)}`, { field });
  }
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
