// Logging in to other registries: where their credentials are kept, and how a request
// gets its Authorization header.
//
// Credentials live in one file in the containers-auth.json format that podman, skopeo and
// buildah read and write ({"auths": {"HOST": {"auth": base64("user:password")}}}), so a
// file made by `skopeo login --authfile` works as is. It is written atomically with mode
// 0600; the password is never logged, printed or put in an error.
//
// The challenge flow is the distribution spec's: GET /v2/ answers 401 with
// WWW-Authenticate. `Basic` → the credentials go with every request. `Bearer realm=…,
// service=…` → a token from the realm, asked for with the credentials (or anonymously)
// for `repository:<name>:pull`, goes with every request.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fetch, type Dispatcher } from 'undici';
import { ShoalError } from '../protocol/index.ts';

export interface RegistryCredentials {
  username: string;
  password: string;
}

interface AuthFile {
  auths?: Record<string, { auth?: string }>;
  [other: string]: unknown;
}

const MAX_AUTH_FILE = 1024 * 1024;
const MAX_TOKEN_REPLY = 64 * 1024;

/** The scheme a registry host is spoken to with: plain http on loopback only (Docker's default), https elsewhere; docker.io's API is at registry-1.docker.io. */
export function registryBaseUrl(host: string): string {
  if (host === 'docker.io' || host === 'index.docker.io') return 'https://registry-1.docker.io';
  const name = host.replace(/:\d+$/, '');
  const loopback = name === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(name);
  return `${loopback ? 'http' : 'https'}://${host}`;
}

async function readAuthFile(file: string): Promise<AuthFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ShoalError('internal', `reading the registry credentials file ${file} failed: ${(e as Error).message}`);
  }
  if (text.length > MAX_AUTH_FILE) throw new ShoalError('invalid', `the registry credentials file ${file} is larger than 1 MiB`);
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as AuthFile;
  } catch (e) {
    throw new ShoalError('invalid', `the registry credentials file ${file} is not a JSON object (${(e as Error).message})`);
  }
}

/**
 * The credentials kept for `host` (and, given `repository`, the most specific entry that
 * covers it: `host/team/app`, then `host/team`, then `host` — containers-auth.json's own
 * rule), if any.
 */
export async function credentialsFor(file: string, host: string, repository?: string): Promise<RegistryCredentials | undefined> {
  const auths = (await readAuthFile(file)).auths ?? {};
  const parts = repository === undefined ? [] : repository.split('/');
  let entry: { auth?: string } | undefined;
  for (let n = parts.length; n >= 0 && entry === undefined; n--) {
    const key = n === 0 ? host : `${host}/${parts.slice(0, n).join('/')}`;
    if (Object.hasOwn(auths, key)) entry = auths[key];
  }
  if (typeof entry?.auth !== 'string') return undefined;
  const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
  const colon = plain.indexOf(':');
  if (colon < 0) return undefined;
  return { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
}

/** Hosts with credentials and their user names (never the passwords). */
export async function listLogins(file: string): Promise<Array<{ host: string; username: string }>> {
  const out: Array<{ host: string; username: string }> = [];
  for (const host of Object.keys((await readAuthFile(file)).auths ?? {})) {
    const c = await credentialsFor(file, host);
    if (c) out.push({ host, username: c.username });
  }
  return out;
}

async function writeAuthFile(file: string, content: AuthFile): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(content, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    await chmod(tmp, 0o600);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new ShoalError('internal', `writing the registry credentials file ${file} failed: ${(e as Error).message}`);
  }
}

/** Stores (or replaces) the credentials for `host`; other entries are kept as they were. */
export async function saveLogin(file: string, host: string, credentials: RegistryCredentials): Promise<void> {
  const content = await readAuthFile(file);
  const auth = Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64');
  await writeAuthFile(file, { ...content, auths: { ...(content.auths ?? {}), [host]: { auth } } });
}

/** False when there was nothing to forget. */
export async function removeLogin(file: string, host: string): Promise<boolean> {
  const content = await readAuthFile(file);
  if (content.auths?.[host] === undefined) return false;
  const auths = { ...content.auths };
  delete auths[host];
  await writeAuthFile(file, { ...content, auths });
  return true;
}

function basic(c: RegistryCredentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (quoted or bare values). */
function challengeParams(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  const scheme = (m?.[1] ?? '').toLowerCase();
  const params: Record<string, string> = {};
  const re = /(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]*))/g;
  for (let p = re.exec(m?.[2] ?? ''); p !== null; p = re.exec(m?.[2] ?? '')) params[p[1]!.toLowerCase()] = p[2] ?? p[3] ?? '';
  return { scheme, params };
}

export interface AuthorizeOptions {
  host: string;
  /** The repository the token is asked for (pull scope). */
  repository: string;
  credentials: RegistryCredentials | undefined;
  /** Each exchange is aborted after this long (default 15 s). */
  timeoutMs?: number;
  /** Reported as the failing field (default 'image'). */
  field?: string;
  /** Carries every request, the token realm's included (the provider's egress guard). */
  dispatcher?: Dispatcher;
}

/**
 * The Authorization header value for pulling `repository` from `host`, or undefined when
 * the registry needs none. ShoalError 'invalid' (naming `field`) when the registry cannot be
 * reached, refuses the credentials or asks for a scheme we do not speak.
 */
export async function authorizeRegistry(options: AuthorizeOptions): Promise<string | undefined> {
  const field = options.field ?? 'image';
  const timeoutMs = options.timeoutMs ?? 15_000;
  const base = registryBaseUrl(options.host);
  const get = async (url: string, headers: Record<string, string>, what: string) => {
    try {
      return await fetch(url, {
        headers: { 'user-agent': 'shoal', ...headers },
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'follow',
        ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
      });
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const why =
        err.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : err.cause?.code === 'ESHOALEGRESS' ? err.cause.message : (err.cause?.code ?? err.cause?.message ?? err.message);
      throw new ShoalError('invalid', `cannot reach the registry ${options.host} (${what}): ${why}`, { field, cause: e });
    }
  };
  const ping = await get(`${base}/v2/`, {}, 'GET /v2/');
  await ping.body?.cancel();
  if (ping.status === 200) return undefined;
  if (ping.status !== 401) throw new ShoalError('invalid', `${options.host} does not look like an OCI registry: GET /v2/ answered HTTP ${ping.status}`, { field });
  const { scheme, params } = challengeParams(ping.headers.get('www-authenticate') ?? '');
  const refused = (status: number): ShoalError =>
    new ShoalError(
      'invalid',
      options.credentials === undefined
        ? `the registry ${options.host} needs credentials (HTTP ${status}): run \`shoal registry login ${options.host}\``
        : `the registry ${options.host} refused the credentials of ${JSON.stringify(options.credentials.username)} (HTTP ${status})`,
      { field },
    );
  if (scheme === 'basic') {
    if (options.credentials === undefined) throw refused(401);
    const header = basic(options.credentials);
    const check = await get(`${base}/v2/`, { authorization: header }, 'GET /v2/ with credentials');
    await check.body?.cancel();
    if (check.status === 401 || check.status === 403) throw refused(check.status);
    if (check.status !== 200) throw new ShoalError('invalid', `the registry ${options.host} answered GET /v2/ with HTTP ${check.status}`, { field });
    return header;
  }
  if (scheme === 'bearer') {
    let realm: URL;
    try {
      realm = new URL(params.realm ?? '');
    } catch {
      throw new ShoalError('invalid', `the registry ${options.host} names no usable token realm`, { field });
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw new ShoalError('invalid', `the registry ${options.host} names a token realm that is not http(s)`, { field });
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', `repository:${options.repository}:pull`);
    const reply = await get(realm.href, options.credentials === undefined ? {} : { authorization: basic(options.credentials) }, 'its token service');
    if (reply.status === 401 || reply.status === 403) {
      await reply.body?.cancel();
      throw refused(reply.status);
    }
    const text = await readBounded(reply, MAX_TOKEN_REPLY);
    if (reply.status !== 200) throw new ShoalError('invalid', `the token service of ${options.host} answered HTTP ${reply.status}`, { field });
    let token: unknown;
    try {
      const body = JSON.parse(text) as { token?: unknown; access_token?: unknown };
      token = body.token ?? body.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_REPLY) {
      throw new ShoalError('invalid', `the token service of ${options.host} sent no token`, { field });
    }
    return `Bearer ${token}`;
  }
  throw new ShoalError('invalid', `the registry ${options.host} asks for ${scheme || 'an unnamed'} authentication; Shoal speaks Basic and Bearer`, { field });
}

async function readBounded(res: Awaited<ReturnType<typeof fetch>>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  if (res.body) {
    for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += c.length;
      if (n > limit) throw new ShoalError('too-large', `a registry's token reply is larger than ${limit} bytes`);
      chunks.push(Buffer.from(c));
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}
