// The host side of an isolate's import calls: one POST to <importsDir>/<name>.sock per call.
// The reply is held in the root agent's memory, so everything an instance can make it hold
// is bounded: the reply's size (the runner's own body limit), the time a call may take, and
// the calls one instance may have in flight. A call beyond a bound fails back to the isolate.
import { request } from 'node:http';

export interface ImportRelayLimits {
  /** Largest reply kept (default 10 MiB, the runner's MAX_BODY_BYTES). */
  maxReplyBytes?: number;
  /** How long one call may take, connect to last byte (default 30 s). */
  timeoutMs?: number;
  /** Calls one instance may have in flight (default 64). */
  maxInFlight?: number;
}

export interface ImportReply {
  status: number;
  text: string;
}

export function createImportRelay(limits: ImportRelayLimits = {}) {
  const maxReplyBytes = limits.maxReplyBytes ?? 10 * 1024 * 1024;
  const timeoutMs = limits.timeoutMs ?? 30_000;
  const maxInFlight = limits.maxInFlight ?? 64;
  const inFlight = new Map<string, number>();

  const failed = (status: number, code: string, message: string): ImportReply => ({ status, text: JSON.stringify({ error: { code, message } }) });

  /** One call of instance `instanceId` to the import at `socketPath` (host-owned); never rejects. */
  async function call(instanceId: string, socketPath: string, label: string, op: string, body: string): Promise<ImportReply> {
    const n = inFlight.get(instanceId) ?? 0;
    if (n >= maxInFlight) return failed(429, 'unavailable', `import ${label}: this instance already has ${maxInFlight} import calls in flight`);
    inFlight.set(instanceId, n + 1);
    try {
      return await new Promise<ImportReply>((resolve) => {
        const req = request({ socketPath, method: 'POST', path: `/${op}`, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > maxReplyBytes) {
              resolve(failed(502, 'too-large', `import ${label}: its reply is larger than ${maxReplyBytes} bytes`));
              req.destroy();
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 502, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', (e) => resolve(failed(503, 'unavailable', `import ${label}: ${e.message}`)));
        });
        const timer = setTimeout(() => {
          resolve(failed(504, 'unavailable', `import ${label}: no reply within ${timeoutMs} ms`));
          req.destroy();
        }, timeoutMs);
        timer.unref();
        req.on('close', () => clearTimeout(timer));
        req.on('error', (e) => resolve(failed(503, 'unavailable', `import ${label}: cannot reach it: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
        req.end(body);
      });
    } finally {
      const left = (inFlight.get(instanceId) ?? 1) - 1;
      if (left > 0) inFlight.set(instanceId, left);
      else inFlight.delete(instanceId);
    }
  }

  return { call };
}
