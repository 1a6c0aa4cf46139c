// Route tokens: the reference parameters of the seeds (Dynasoar's VM-specific headers).
// A host hands one out with an instance's endpoint; each message carries it back, and the
// forwarder learns from it alone which instance to reach, so the host keeps no route table.
//
// Wire form (base64url, safe in URLs and headers):
//   v1.<payload>.<sig>
//   payload = base64url(JSON.stringify([instance, service, expiresAt, operations]))   (a
//             fixed-order array is a canonical encoding: one claims value has one byte string)
// `operations` lists the paths the bearer may reach (the service's declared operations); an
// empty list means every path (a plan that names none, e.g. a raw HTTP instance). The
// token carries its scope, so the forwarder checks it with no per-route state.
//   sig     = base64url(HMAC-SHA256(key, "v1." + payload))                 (43 characters)

import { createHmac, createSecretKey, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { ShoalError } from '../../protocol/index.ts';

export interface RouteClaims {
  instance: string;
  service: string;
  /** Unix time in milliseconds after which the token is refused. */
  expiresAt: number;
  /** Operations (first path segment under /i) the token reaches; empty = any path. */
  operations: readonly string[];
}

export type RouteTokenFailure = 'malformed' | 'bad-signature' | 'expired';

export type RouteTokenCheck = { ok: true; claims: RouteClaims } | { ok: false; reason: RouteTokenFailure };

/** One key, or several during a rotation: sign with the first, accept any. */
export type RouteKeys = Uint8Array | readonly Uint8Array[];

const PREFIX = 'v1.';
const SIG_CHARS = 43; // 32 bytes of base64url without padding
const MIN_KEY_BYTES = 16;
const MAX_NAME_CHARS = 256;
const MAX_TOKEN_CHARS = 16_384;
const MAX_OPERATIONS = 256;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** A fresh random 32-byte key for signing route tokens. */
export function generateRouteKey(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** What to sign: operations may be left out (= any path). */
export type RouteGrant = Omit<RouteClaims, 'operations'> & { operations?: readonly string[] };

export function signRouteToken(claims: RouteGrant, keys: RouteKeys): string {
  const key = firstKey(keys);
  checkName(claims.instance, 'instance');
  checkName(claims.service, 'service');
  if (!Number.isSafeInteger(claims.expiresAt) || claims.expiresAt <= 0) {
    throw new ShoalError('invalid', `route token expiresAt must be a positive integer of unix milliseconds, got ${String(claims.expiresAt)}`, {
      field: 'expiresAt',
    });
  }
  const operations = claims.operations ?? [];
  if (!Array.isArray(operations) || operations.length > MAX_OPERATIONS || operations.some((o) => typeof o !== 'string' || o.length === 0 || o.length > MAX_NAME_CHARS || o.includes('/'))) {
    throw new ShoalError('invalid', `route token operations must be at most ${MAX_OPERATIONS} non-empty names without '/'`, { field: 'operations' });
  }
  const payload = Buffer.from(JSON.stringify([claims.instance, claims.service, claims.expiresAt, operations])).toString('base64url');
  const signed = PREFIX + payload;
  return `${signed}.${mac(key, signed).toString('base64url')}`;
}

export function verifyRouteToken(token: string, keys: RouteKeys, now: number = Date.now()): RouteTokenCheck {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS || !token.startsWith(PREFIX)) return MALFORMED;
  const dot = token.lastIndexOf('.');
  if (dot <= PREFIX.length || token.length - dot - 1 !== SIG_CHARS) return MALFORMED;
  const signed = token.slice(0, dot);
  const payload = token.slice(PREFIX.length, dot);
  const sigText = token.slice(dot + 1);
  if (!BASE64URL.test(payload) || !BASE64URL.test(sigText)) return MALFORMED;

  const sig = Buffer.from(sigText, 'base64url');
  // Re-encoding must give the same text: the last character has two spare bits, and a
  // token must have one spelling only (it is also a cache key).
  if (sig.length !== 32 || sig.toString('base64url') !== sigText) return MALFORMED;
  let good = false;
  const list = keyList(keys);
  for (let i = 0; i < list.length; i++) {
    // Every key is tried (no early exit) so timing does not tell which key matched.
    if (timingSafeEqual(mac(list[i]!, signed), sig)) good = true;
  }
  if (!good) return BAD_SIGNATURE;

  const claims = decodePayload(payload);
  if (claims === undefined) return MALFORMED;
  if (now >= claims.expiresAt) return EXPIRED;
  return { ok: true, claims };
}

const MALFORMED: RouteTokenCheck = Object.freeze({ ok: false, reason: 'malformed' });
const BAD_SIGNATURE: RouteTokenCheck = Object.freeze({ ok: false, reason: 'bad-signature' });
const EXPIRED: RouteTokenCheck = Object.freeze({ ok: false, reason: 'expired' });

// createHmac with raw key bytes costs ~17 µs (it builds a key object each time); with a
// prepared KeyObject ~3 µs. Keys are few and long-lived, so remember one per key array.
// (A key array mutated in place after use would keep its old KeyObject: treat keys as immutable.)
const keyObjects = new WeakMap<Uint8Array, KeyObject>();

function mac(key: Uint8Array, text: string): Buffer {
  let keyObject = keyObjects.get(key);
  if (keyObject === undefined) {
    keyObject = createSecretKey(key);
    keyObjects.set(key, keyObject);
  }
  return createHmac('sha256', keyObject).update(text).digest();
}

function decodePayload(payload: string): RouteClaims | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(value) || value.length !== 4) return undefined;
  const [instance, service, expiresAt, operations] = value as unknown[];
  if (typeof instance !== 'string' || typeof service !== 'string' || typeof expiresAt !== 'number') return undefined;
  if (instance.length === 0 || service.length === 0 || !Number.isSafeInteger(expiresAt)) return undefined;
  if (!Array.isArray(operations) || !operations.every((o): o is string => typeof o === 'string')) return undefined;
  return { instance, service, expiresAt, operations };
}

function keyList(keys: RouteKeys): readonly Uint8Array[] {
  return keys instanceof Uint8Array ? [keys] : keys;
}

function firstKey(keys: RouteKeys): Uint8Array {
  const key = keyList(keys)[0];
  if (key === undefined) throw new ShoalError('invalid', 'route token signing needs at least one key', { field: 'keys' });
  if (key.length < MIN_KEY_BYTES) {
    throw new ShoalError('invalid', `route token key is ${key.length} bytes; it must be at least ${MIN_KEY_BYTES}`, { field: 'keys[0]' });
  }
  return key;
}

function checkName(value: unknown, field: 'instance' | 'service'): void {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_NAME_CHARS) {
    throw new ShoalError('invalid', `route token ${field} must be a non-empty string of at most ${MAX_NAME_CHARS} characters`, { field });
  }
}

/** Whether claims reach `path` (the forwarded path, '/<op>…'): its first segment must be a named operation. */
export function claimsReach(claims: RouteClaims, path: string): boolean {
  if (claims.operations.length === 0) return true;
  let end = path.length;
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 47 /* / */ || c === 63 /* ? */) {
      end = i;
      break;
    }
  }
  const segment = path.slice(1, end);
  for (const op of claims.operations) if (op === segment) return true;
  return false;
}
