// The forwarder's in-process entry (src/http/local-link.ts): one request from a provider
// in this process, relayed to the instance over its pooled Unix-socket connections, with
// the reply handed back to the provider's callbacks. Everything a provider can tell apart
// over HTTP is the same here: the instance's reply with the host's headers added (and its
// own x-shoal-error dropped: an instance cannot pose as the host), and the host's own
// failures as the same marked JSON replies relay.ts makes.
import { rewriteReplyHeaders, type OutgoingRequest, type ReplyHandlers, type ReplyHead, type Upstream, type UpstreamExchange } from '../../http/index.ts';
import { ERROR_HEADER, type DataPlaneError, type ErrorCode } from '../../protocol/index.ts';

export interface LocalRelayPlan {
  /** Added to the reply's headers (flat, lower-case names), replacing any the instance sent. */
  replyHeaders: readonly string[];
  /** Names the instance in error messages. */
  describe: string;
  /** Called once when the exchange is over (status 499: abandoned before the reply's head). */
  done(status: number, bytesOut: number): void;
}

/** Relays `req` to the instance behind `upstream`; its reply (or the host's marked failure) goes to `handlers`. */
export function relayExchange(upstream: Upstream, req: OutgoingRequest, handlers: ReplyHandlers, plan: LocalRelayPlan): UpstreamExchange {
  let status = 0;
  let bytesOut = 0;
  let over = false;
  let aborted = false;
  const finish = (s: number): void => {
    if (over) return;
    over = true;
    plan.done(s, bytesOut);
  };
  const inner = upstream.request(req, {
    onHead(h) {
      status = h.status;
      handlers.onHead({ ...h, headers: rewriteReplyHeaders(h.headers, plan.replyHeaders, true) });
    },
    onData(chunk) {
      bytesOut += chunk.length;
      handlers.onData(chunk);
    },
    onEnd() {
      finish(status);
      handlers.onEnd();
    },
    onError(err, _sent, replied) {
      if (replied) {
        // The reply had begun: it can only be cut (over HTTP the host cuts its own reply).
        finish(status);
        return handlers.onError(err, true, true);
      }
      // As relay.ts answers over HTTP: 504 for silence, 502 for a refusal, a garbled reply or a lost message.
      const code = err.code ?? '';
      const [s, reason, message]: [number, DataPlaneError, string] =
        code === 'ETIMEDOUT'
          ? [504, 'timeout', `did not answer within ${upstream.timeoutMs} ms`]
          : code === 'EPROTO'
            ? [502, 'bad-reply', `sent an ${err.message}`]
            : code === 'ECONNREFUSED' || code === 'ENOENT'
              ? [502, 'refused', `is not answering (${code})`]
              : [502, 'lost', code === 'ECONNRESET' ? 'closed the connection without answering' : `is not answering (${code || err.message})`];
      finish(s);
      if (!aborted) deliver(handlers, s, s === 504 ? 'timeout' : 'unavailable', reason, `${plan.describe} ${message}`, plan.replyHeaders, () => aborted);
    },
  });
  return {
    pause: () => inner.pause(),
    resume: () => inner.resume(),
    abort() {
      aborted = true;
      finish(status === 0 ? 499 : status);
      inner.abort();
    },
  };
}

/** A reply the forwarder makes itself, handed over on the next microtask (the caller holds the exchange by then). */
export function answerLater(handlers: ReplyHandlers, status: number, code: ErrorCode, reason: DataPlaneError, message: string, extra: readonly string[] | undefined): UpstreamExchange {
  let aborted = false;
  queueMicrotask(() => {
    if (!aborted) deliver(handlers, status, code, reason, message, extra, () => aborted);
  });
  const idle = (): void => undefined;
  return { pause: idle, resume: idle, abort: () => void (aborted = true) };
}

function deliver(handlers: ReplyHandlers, status: number, code: ErrorCode, reason: DataPlaneError, message: string, extra: readonly string[] | undefined, aborted: () => boolean): void {
  const body = Buffer.from(JSON.stringify({ error: { code, message } }));
  const headers = ['content-type', 'application/json', 'content-length', String(body.length), ERROR_HEADER, reason];
  if (extra !== undefined) {
    // Hop-by-hop fields (connection: close for a refused large body) belong to a connection; there is none.
    for (let i = 0; i < extra.length; i += 2) if (extra[i] !== 'connection') headers.push(extra[i]!, extra[i + 1]!);
  }
  const head: ReplyHead = { status, headers, framing: 'length', length: body.length, keepAlive: true, keepAliveMs: undefined };
  handlers.onHead(head);
  if (aborted()) return;
  handlers.onData(body);
  if (aborted()) return;
  handlers.onEnd();
}
