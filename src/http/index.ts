// The project's one HTTP client stack (undici), as the data plane uses it: a pool per
// endpoint, one whole request with its reply to callbacks, a streaming relay for node:http
// servers, and a server-sent-events reader. Host and provider import this door only.
export { createUpstream, MAX_HEAD_BYTES, Upstream } from './upstream.ts';
export type { OutgoingRequest, ReplyHandlers, UpstreamExchange, UpstreamOptions } from './upstream.ts';
export { ProtocolError, readReplyHead } from './reply-head.ts';
export type { Framing, ReplyHead } from './reply-head.ts';
export { closeServer, readRequestHead, relay, replyError, ROUTE_HEADER } from './relay.ts';
export type { RelayPlan, RequestHead } from './relay.ts';
export { createEventParser, readEventStream } from './event-stream.ts';
export type { EventStreamOptions, StreamEvent } from './event-stream.ts';
