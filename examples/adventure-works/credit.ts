// The external credit service (Baltic's credit.fr): a Payment-typed service outside the
// farm, run as a plain process. serve() listens on a Unix socket; a tiny TCP front makes
// it reachable at the URL the farm imports (importEndpoint(Payment, url)).
//   node examples/adventure-works/credit.ts 7411
import { createServer, request, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serve } from '../../src/service/index.ts';
import { Payment } from './definitions.ts';
import { paymentHandlers } from './payment.ts';

export interface CreditService {
  url: string;
  /** Messages answered so far. */
  answered(): number;
  close(): Promise<void>;
}

export async function startCredit(options: { port?: number; delayMs?: number } = {}): Promise<CreditService> {
  const dir = mkdtempSync(join(tmpdir(), 'aw-credit-'));
  const socketPath = join(dir, 'credit.sock');
  const base = paymentHandlers('credit');
  let answered = 0;
  const running = await serve(
    Payment,
    {
      Authorize: async (input, ctx) => {
        if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
        answered++;
        return base.Authorize(input, ctx);
      },
    },
    { listen: socketPath, handleSignals: false, logger: false },
  );
  const front: Server = createServer((req, res) => {
    const up = request({ socketPath, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.headersSent ? res.destroy() : res.writeHead(502).end());
    req.pipe(up);
  });
  await new Promise<void>((r) => front.listen(options.port ?? 0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(front.address() as AddressInfo).port}`,
    answered: () => answered,
    async close() {
      front.closeAllConnections();
      await new Promise((r) => front.close(r));
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

if (import.meta.main) {
  const c = await startCredit({ port: Number(process.argv[2] ?? 7411) });
  process.stdout.write(`credit service at ${c.url}\n`);
  process.once('SIGTERM', () => void c.close());
  process.once('SIGINT', () => void c.close());
}
