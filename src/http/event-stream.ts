// A server-sent-events reader (the WHATWG event-stream format) on undici: one GET, events
// handed to a callback as they arrive. Reconnecting is the caller's choice (it knows the
// last event id and its back-off).

import { request, type Dispatcher } from 'undici';

export interface StreamEvent {
  /** The `event:` field; 'message' when absent. */
  event: string;
  data: string;
  /** The last `id:` field seen on the stream so far, if any. */
  id: string | undefined;
}

export interface EventStreamOptions {
  headers?: Record<string, string>;
  /** Sent as Last-Event-ID (resume after it). */
  lastEventId?: string | undefined;
  signal?: AbortSignal;
  dispatcher?: Dispatcher;
  /** The stream is open (the server answered 200). */
  onOpen?(): void;
  onEvent(event: StreamEvent): void;
  /** Longest a stream line (one field) may be; a longer one fails the stream. Default 1 MiB. */
  maxLineBytes?: number;
}

/**
 * Reads the event stream at `url` until the server ends it (resolves) or it fails
 * (rejects: not 200 or not text/event-stream, a line past the limit, the connection lost,
 * or the signal). Events are dispatched at each blank line, per the WHATWG rules.
 */
export async function readEventStream(url: string | URL, options: EventStreamOptions): Promise<void> {
  const maxLine = options.maxLineBytes ?? 1024 * 1024;
  const headers: Record<string, string> = { accept: 'text/event-stream', ...options.headers };
  if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId;
  const res = await request(url, {
    method: 'GET',
    headers,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    ...(options.dispatcher === undefined ? {} : { dispatcher: options.dispatcher }),
    // Events may be far apart: silence is not failure (the caller's signal ends the stream).
    bodyTimeout: 0,
  });
  const type = String(res.headers['content-type'] ?? '');
  if (res.statusCode !== 200 || !type.startsWith('text/event-stream')) {
    await res.body.dump().catch(() => undefined); // the connection is what matters, not the body
    throw Object.assign(new Error(`event stream ${String(url)}: HTTP ${res.statusCode} ${type}`), { status: res.statusCode });
  }
  options.onOpen?.();
  const parser = createEventParser(options.onEvent, maxLine);
  res.body.setEncoding('utf8');
  for await (const chunk of res.body as AsyncIterable<string>) parser.push(chunk);
}

/** The line-level parser, separate so it can be tested on its own. */
export function createEventParser(onEvent: (e: StreamEvent) => void, maxLine = 1024 * 1024): { push(text: string): void } {
  let buf = '';
  let data: string[] = [];
  let event = '';
  let id: string | undefined;
  let first = true;
  const line = (text: string): void => {
    if (text === '') {
      if (data.length > 0) onEvent({ event: event === '' ? 'message' : event, data: data.join('\n'), id });
      data = [];
      event = '';
      return;
    }
    if (text.startsWith(':')) return; // a comment (keep-alive)
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        data.push(value);
        break;
      case 'event':
        event = value;
        break;
      case 'id':
        if (!value.includes('\0')) id = value;
        break;
      default:
        // 'retry' and unknown fields: ignored (the caller owns reconnection).
        break;
    }
  };
  return {
    push(text) {
      buf += text;
      if (first && buf.length > 0) {
        if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1);
        first = false;
      }
      let start = 0;
      for (;;) {
        const cr = buf.indexOf('\r', start);
        const lf = buf.indexOf('\n', start);
        let end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
        if (end === -1) break;
        // A CR at the very end may be the first half of CRLF: wait for the next chunk.
        if (end === cr && cr === buf.length - 1) break;
        line(buf.slice(start, end));
        start = end + (end === cr && buf[cr + 1] === '\n' ? 2 : 1);
      }
      buf = buf.slice(start);
      if (buf.length > maxLine) throw new Error(`event stream line longer than ${maxLine} bytes`);
    },
  };
}
