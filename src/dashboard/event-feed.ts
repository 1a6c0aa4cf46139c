// Live events for the page as server-sent events. The provider's events are rows in the
// registry (deployed, undeployed, adopted, farm changes, crash rules), written by any
// provider sharing it, so the feed follows the table: one poll loop for all browsers,
// running only while one is connected. Each event carries its row id, so a browser that
// reconnects (EventSource sends Last-Event-ID) misses none.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EventSummary } from '../protocol/index.ts';

export interface EventFeedOptions {
  /** Events after `afterId` oldest first, or the newest `limit` without it (registry.listEvents). */
  listEvents(filter: { afterId?: number; limit: number }): Promise<EventSummary[]>;
  pollMs?: number;
  heartbeatMs?: number;
  /** Browsers following at once (default 64); more get a 503 and retry. */
  maxClients?: number;
  /** A browser that falls this far behind (bytes queued, default 1 MiB) is cut off; it reconnects and resumes from its last event id. */
  maxBufferedBytes?: number;
  log: { warn(obj: object, msg?: string): void };
}

export interface EventFeed {
  attach(req: IncomingMessage, res: ServerResponse): Promise<void>;
  clients(): number;
  close(): void;
}

const BACKLOG = 50;

export function createEventFeed(options: EventFeedOptions): EventFeed {
  const pollMs = options.pollMs ?? 500;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const maxClients = options.maxClients ?? 64;
  const maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;
  const clients = new Set<ServerResponse>();
  let lastId: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  let polling = false;

  const frame = (e: EventSummary): string => `id: ${e.id}\nevent: shoal\ndata: ${JSON.stringify(e)}\n\n`;

  // A reader that does not read must not grow the provider's memory: past the bound it is
  // cut off (EventSource reconnects with Last-Event-ID and misses nothing).
  function send(res: ServerResponse, text: string): void {
    if (res.writableLength + Buffer.byteLength(text) > maxBuffered) {
      clients.delete(res);
      res.destroy();
      stopIfIdle();
      return;
    }
    res.write(text);
  }

  async function poll(): Promise<void> {
    if (polling || lastId === undefined) return;
    polling = true;
    try {
      for (;;) {
        const events = await options.listEvents({ afterId: lastId, limit: 500 });
        if (events.length === 0) break;
        lastId = events.at(-1)!.id;
        const text = events.map(frame).join('');
        for (const res of [...clients]) send(res, text);
        if (events.length < 500) break;
      }
    } catch (e) {
      options.log.warn({ err: String((e as Error)?.message ?? e) }, 'dashboard: reading new events failed; trying again');
    } finally {
      polling = false;
    }
  }

  function stopIfIdle(): void {
    if (clients.size > 0) return;
    clearInterval(timer);
    clearInterval(heartbeat);
    timer = heartbeat = undefined;
  }

  return {
    async attach(req, res) {
      if (clients.size >= maxClients) {
        const body = JSON.stringify({ error: { code: 'unavailable', message: `${maxClients} browsers follow the events already; try again later`, field: 'events' } });
        res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'retry-after': '5', 'cache-control': 'no-store' });
        return void res.end(body);
      }
      const resume = Number(req.headers['last-event-id']);
      const backlog = Number.isInteger(resume) && resume >= 0 ? await options.listEvents({ afterId: resume, limit: 500 }) : await options.listEvents({ limit: BACKLOG });
      if (lastId === undefined) {
        const newest = backlog.at(-1)?.id ?? (await options.listEvents({ limit: 1 })).at(-1)?.id ?? 0;
        lastId = newest;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      // Only what the shared loop has not sent yet to others: the loop sends the rest.
      res.write(`retry: 2000\n\n${backlog.filter((e) => e.id <= lastId!).map(frame).join('')}`);
      clients.add(res);
      const gone = (): void => {
        clients.delete(res);
        stopIfIdle();
      };
      res.once('close', gone);
      req.once('close', gone);
      timer ??= setInterval(() => void poll(), pollMs);
      heartbeat ??= setInterval(() => {
        for (const c of [...clients]) send(c, ': keep-alive\n\n');
      }, heartbeatMs);
    },
    clients: () => clients.size,
    close() {
      for (const res of clients) res.end();
      clients.clear();
      stopIfIdle();
    },
  };
}
