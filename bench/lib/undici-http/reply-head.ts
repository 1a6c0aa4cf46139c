// A reply's head as the project's callers use it: end-to-end headers as a flat array (no
// header objects on the hot path), the body's framing, and the strict checks a reply from
// a hostile instance must pass on top of undici's parser (llhttp, strict mode), which
// already refuses bad status lines, obs-fold, bad chunk sizes, duplicate or bad
// Content-Length and Content-Length with Transfer-Encoding.

export type Framing = 'none' | 'length' | 'chunked' | 'close';

export interface ReplyHead {
  status: number;
  /** End-to-end headers, flat [name, value, …], hop-by-hop ones removed. */
  headers: string[];
  framing: Framing;
  /** For 'length'. */
  length: number;
}

/** The reply broke the protocol (the peer is out of step or hostile); its connection is dropped. */
export class ProtocolError extends Error {}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Control characters other than tab: never valid in a field value. */
const CTL = /[\x00-\x08\x0a-\x1f\x7f]/;

/**
 * Reads undici's raw reply headers (flat [name, value, …] buffers, latin1 as received).
 * Drops the hop-by-hop headers (RFC 9110 §7.6.1, and those named in Connection), and
 * Content-Length when the body is not framed by it (node frames our reply anew).
 */
export function readReplyHead(status: number, raw: readonly Buffer[] | readonly string[], method: string): ReplyHead {
  const headers: string[] = [];
  let length = -1;
  let chunked = false;
  let connectionTokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1');
    const value = raw[i + 1]!.toString('latin1');
    if (!TOKEN.test(name)) throw new ProtocolError(`bad header name ${JSON.stringify(name.slice(0, 100))}`);
    if (CTL.test(value)) throw new ProtocolError(`control character in header ${name}`);
    const lower = name.toLowerCase();
    switch (lower) {
      case 'content-length':
        if (!/^\d{1,15}$/.test(value)) throw new ProtocolError(`bad content-length ${JSON.stringify(value.slice(0, 40))}`);
        if (length !== -1) throw new ProtocolError('repeated content-length');
        length = Number(value);
        break;
      case 'transfer-encoding':
        chunked = true;
        continue;
      case 'connection':
        for (const part of value.split(',')) {
          const token = part.trim().toLowerCase();
          if (token !== '' && token !== 'close' && token !== 'keep-alive') (connectionTokens ??= []).push(token);
        }
        continue;
      case 'keep-alive':
      case 'te':
      case 'trailer':
      case 'upgrade':
        continue;
      default:
        if (lower.startsWith('proxy-')) continue;
    }
    headers.push(name, value);
  }
  if (chunked && length !== -1) throw new ProtocolError('both content-length and transfer-encoding');
  const framing: Framing = method === 'HEAD' || status === 204 || status === 304 ? 'none' : length !== -1 ? 'length' : chunked ? 'chunked' : 'close';
  return {
    status,
    headers: connectionTokens === undefined ? headers : withoutNames(headers, connectionTokens),
    framing,
    length: length === -1 ? 0 : length,
  };
}

function withoutNames(headers: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (!names.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  return out;
}
