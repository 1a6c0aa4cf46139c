// The project's HTTP client part. The data plane's lean HTTP/1.1 client (a pool per
// endpoint, one whole request with its reply to callbacks, a streaming relay for node:http
// servers), used by the host's forwarder and import sockets and by the provider's link to
// each host; and a server-sent-events reader on undici, the client every other part uses
// (registry client, CLI). Host and provider import this door only.
export { ChunkedDecoder, createUpstream, MAX_HEAD_BYTES, parseReplyHead, ProtocolError, Upstream } from './upstream.ts';
export type { Framing, OutgoingRequest, ReplyHandlers, ReplyHead, UpstreamExchange, UpstreamOptions } from './upstream.ts';
export { localDataPlane, registerLocalDataPlane } from './local-link.ts';
export type { DataLink } from './local-link.ts';
export { closeServer, readRequestHead, relay, replyError, rewriteReplyHeaders, ROUTE_HEADER } from './relay.ts';
export type { RelayPlan, RequestHead } from './relay.ts';
export { createEgressDispatcher, EgressRefused, isPublicAddress, parseAllowList } from './egress-guard.ts';
export { caOption, checkBindAddress, createListener, isLoopbackHost, readTlsIdentity, trustCaFile, trustedCa, undiciConnect } from './tls.ts';
export type { ListenerOptions, TlsIdentity } from './tls.ts';
export { createEventParser, readEventStream } from './event-stream.ts';
export type { EventStreamOptions, StreamEvent } from './event-stream.ts';
// The edge of every server: timeouts, per-client connection caps, and the checks that keep
// browsers and DNS-rebound pages out (harden-server.ts).
export { clientKey, HARDENING_DEFAULTS, hardenServer, hardeningLimits, type HardeningLimits, type HardeningOptions } from './harden-server.ts';
