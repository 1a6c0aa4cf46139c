// The data-plane client on undici, kept in bench/ only for bench/http-client.ts, which
// compares it with the hand-written one in src/http (see that bench for why src keeps the latter).
export { createUpstream, Upstream } from './upstream.ts';
export type { OutgoingRequest, ReplyHandlers, UpstreamExchange, UpstreamOptions } from './upstream.ts';
export type { ReplyHead } from './reply-head.ts';
export { closeServer, readRequestHead, relay, replyError, ROUTE_HEADER } from './relay.ts';
