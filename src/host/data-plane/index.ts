// The host's data plane: route tokens, the forwarder and the import sockets (their HTTP
// client is src/http, which the provider uses too).
export { claimsReach, generateRouteKey, signRouteToken, verifyRouteToken } from './route-token.ts';
export type { RouteClaims, RouteGrant, RouteKeys, RouteTokenCheck, RouteTokenFailure } from './route-token.ts';
export { createForwarder, listenForwarder } from './forwarder.ts';
export type { ForwardEvent, Forwarder, ForwarderOptions, InstanceState, ListeningForwarder } from './forwarder.ts';
export { IMPORT_NAME, openImportSockets } from './import-sockets.ts';
export type { ImportBinding, ImportSockets, ImportSocketsOptions } from './import-sockets.ts';
export { ROUTE_HEADER } from '../../protocol/index.ts';
