// The admin token `shoal up` and `shoal provider` make on first start, kept in the state
// directory (dir 0700, file 0600) where the CLI finds it; and the standalone store's
// token file, which the store checks against instead of a registry.
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Registry } from '../registry/index.ts';
import { createApiToken } from './tokens-api.ts';
import { mintToken, tokenId } from './token.ts';

export const ADMIN_TOKEN_FILE = 'admin-token';

export interface StateToken {
  path: string;
  secret: string;
  /** True when this call made it. */
  created: boolean;
}

/**
 * Returns the admin token in `stateDir`, making one (stored hashed in the registry) when
 * the file is missing or names a token this registry has never seen (a new database). A
 * token that exists but was revoked is left revoked: the operator meant it.
 */
export async function ensureAdminToken(stateDir: string, registry: Pick<Registry, 'createApiToken' | 'getApiToken'>): Promise<StateToken> {
  await secureDir(stateDir);
  const path = join(stateDir, ADMIN_TOKEN_FILE);
  const existing = await readToken(path);
  if (existing !== undefined) {
    const id = tokenId(existing);
    if (id !== undefined && (await registry.getApiToken(id)) !== undefined) return { path, secret: existing, created: false };
  }
  const made = await createApiToken(registry, { role: 'admin', note: `first start (${path})` });
  await writeSecret(path, made.secret);
  return { path, secret: made.secret, created: true };
}

/** The standalone store's own token: read from `path`, or made and written there. */
export async function ensureTokenFile(path: string): Promise<StateToken> {
  const existing = await readToken(path);
  if (existing !== undefined && tokenId(existing) !== undefined) return { path, secret: existing, created: false };
  const { secret } = mintToken();
  await writeSecret(path, secret);
  return { path, secret, created: true };
}

export async function readToken(path: string): Promise<string | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return text === '' ? undefined : text;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Creates the directory if needed and makes it 0700 (it holds the registry and tokens). */
export async function secureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

async function writeSecret(path: string, secret: string): Promise<void> {
  await writeFile(path, `${secret}\n`, { mode: 0o600 });
  await chmod(path, 0o600); // writeFile's mode applies only when it creates the file
}
