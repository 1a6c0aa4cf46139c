import { fetch, type Response } from 'undici';
import { ShoalError, type ErrorBody } from '../protocol/index.ts';

/** Asks a Shoal store to collect unreachable blobs (its control API; not part of OCI). */
export async function requestGc(storeUrl: string, options: { minAgeMs?: number; token?: string } = {}): Promise<{ removedBlobs: number; freedBytes: number }> {
  const { token, ...request } = options;
  let res: Response;
  try {
    res = await fetch(`${storeUrl}/api/v1/gc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(request),
    });
  } catch (e) {
    throw new ShoalError('unavailable', `cannot reach the store at ${storeUrl}`, { cause: e });
  }
  const body = (await res.json().catch(() => undefined)) as ({ removedBlobs: number; freedBytes: number } & Partial<ErrorBody>) | undefined;
  if (!res.ok || !body) {
    throw new ShoalError(body?.error?.code ?? 'internal', body?.error?.message ?? `store answered ${res.status} to gc`);
  }
  return body;
}
