// The host's data plane: route tokens, the forwarder, the import sockets, and the lean
// HTTP/1.1 client they use (which the provider uses too, for its link to each host).
export { generateRouteKey, signRouteToken, verifyRouteToken } from './route-token.ts';
export type { RouteClaims, RouteKeys, RouteTokenCheck, RouteTokenFailure } from './route-token.ts';
export { createForwarder, listenForwarder } from './forwarder.ts';
export type { ForwardEvent, Forwarder, ForwarderOptions, InstanceState, ListeningForwarder } from './forwarder.ts';
export { IMPORT_NAME, openImportSockets } from './import-sockets.ts';
export type { ImportBinding, ImportSockets, ImportSocketsOptions } from './import-sockets.ts';
export { ROUTE_HEADER } from './relay.ts';
export { createUpstream } from './upstream.ts';
export type { Framing, ReplyHandlers, ReplyHead, Upstream, UpstreamExchange, UpstreamOptions } from './upstream.ts';
