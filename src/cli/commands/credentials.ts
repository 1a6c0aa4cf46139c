// Which API token a client command sends: --token, else SHOAL_TOKEN, else the admin token
// `shoal up` / `shoal provider` wrote in the state directory (SHOAL_STATE, default ./.shoal).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_STATE_DIR = './.shoal';

export function resolveToken(opts: { token?: string }): string | undefined {
  if (opts.token !== undefined && opts.token !== '') return opts.token;
  const env = process.env.SHOAL_TOKEN;
  if (env !== undefined && env !== '') return env;
  const file = join(process.env.SHOAL_STATE ?? DEFAULT_STATE_DIR, 'admin-token');
  try {
    const text = readFileSync(file, 'utf8').trim();
    return text === '' ? undefined : text;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES') return undefined; // no token: the server says 401 and why
    throw e;
  }
}

/** The header to add, if there is a token. */
export function authHeader(opts: { token?: string }): Record<string, string> {
  const token = resolveToken(opts);
  return token === undefined ? {} : { authorization: `Bearer ${token}` };
}

export const TOKEN_OPTION_HELP = 'API token (env SHOAL_TOKEN; default: the admin token in ./.shoal/admin-token)';
