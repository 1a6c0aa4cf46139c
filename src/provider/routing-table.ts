// What the message path reads, all in memory: the services (with their input schemas
// compiled once per version) and each service's ready endpoints. This table is the only
// in-memory store of ready endpoints; the registry is the durable copy, and the deployer,
// the reconciler and the host events keep the two in step. Changes leave as events
// (`onAdded`, `onRemoved`); the wiring turns an added endpoint into the activator's
// release. A warm message never leaves this table for the database.
import type { DataLink } from '../http/index.ts';
import type { InFlightTracker } from './balancer/index.ts';
import { compileSchema, type SchemaCheck } from './json-schema.ts';
import type { ServiceDescription, EndpointReference } from '../protocol/index.ts';

export interface CompiledOperation {
  readonly name: string;
  readonly idempotent: boolean;
  readonly check: SchemaCheck;
}

export interface ServiceEntry {
  readonly name: string;
  readonly version: string;
  readonly description: ServiceDescription;
  readonly operations: ReadonlyMap<string, CompiledOperation>;
}

/** One ready instance as the router sees it. */
export interface RouteEndpoint {
  /** The instance id (unique across hosts: the host prefixes it with the service name and a random suffix). */
  readonly id: string;
  readonly service: string;
  readonly version: string;
  readonly deploymentId: string;
  readonly hostId: string;
  /** The host's data plane, parsed once. */
  readonly hostname: string;
  readonly port: number;
  /** Path prefix on the data plane ('/i'); the operation is appended. */
  readonly pathPrefix: string;
  token: string;
  expiresAt: number;
  /** How long the current token was valid for when it arrived (the host's lifetime setting). */
  tokenLifetimeMs: number;
  /** Pooled keep-alive connections to the host's data plane (one per host address), or the host's forwarder itself when it runs in this process. */
  readonly link: DataLink;
  /** The Host header for it. */
  readonly authority: string;
  readonly readyAt: number;
  /** The provider that deployed it (scaling down is left to it). */
  readonly deployedBy: string | undefined;
  /** Set until the first reply through this endpoint has been recorded in its timeline. */
  firstReplyPending: boolean;
}

export type RemovalReason = 'crashed' | 'oom' | 'exited' | 'unresponsive' | 'removed' | 'host-dead' | 'unreachable' | 'scaled-down' | 'undeployed' | 'gone';

export interface RoutingTableEvents {
  /**
   * An endpoint left the routing set (synchronously, before any further message is
   * routed). Called a second time, once, when the router took an instance out on a
   * guess ('gone', 'unreachable') and its host's verdict (crashed, oom, exited) follows.
   */
  onRemoved?(endpoint: RouteEndpoint, reason: RemovalReason): void;
  onAdded?(endpoint: RouteEndpoint): void;
}

export interface RoutingTable {
  service(name: string): ServiceEntry | undefined;
  services(): ServiceEntry[];
  /** Compiles and installs a service version (replacing the previous one). Throws if a schema cannot be compiled. */
  putService(description: ServiceDescription): ServiceEntry;
  /** Forgets the service and drops its endpoints (reason 'undeployed'). */
  removeService(name: string): RouteEndpoint[];

  /** Ready endpoints of a service (the live array: do not keep it). */
  endpoints(service: string): readonly RouteEndpoint[];
  endpoint(instanceId: string): RouteEndpoint | undefined;
  allEndpoints(): RouteEndpoint[];
  add(endpoint: RouteEndpoint): void;
  /** Removes at once; returns the endpoint if it was routable. */
  remove(instanceId: string, reason: RemovalReason): RouteEndpoint | undefined;
  /** Updates the route token of a known endpoint (a fresher reference from its host). */
  refresh(instanceId: string, ref: EndpointReference): void;

  /**
   * Takes a ready endpoint out of routing while its instance is frozen in memory (host
   * pause): no removal event, no crash rule. remove() also forgets a paused endpoint.
   */
  pause(instanceId: string): RouteEndpoint | undefined;
  /** Puts a paused endpoint back into routing; onAdded fires, so queued messages go to it. */
  unpause(instanceId: string): RouteEndpoint | undefined;
  /** Paused endpoints of a service (a copy). */
  paused(service: string): RouteEndpoint[];
  pausedEndpoint(instanceId: string): RouteEndpoint | undefined;

  /** When the instance last left the routing set (epoch ms), if within the last minute. */
  removedAt(instanceId: string): number | undefined;

  /** Last time a message for the service arrived (epoch ms; 0 if none since start). */
  lastMessageAt(service: string): number;
  touch(service: string, now: number): void;
}

export function compileService(description: ServiceDescription): ServiceEntry {
  const operations = new Map<string, CompiledOperation>();
  for (const [name, op] of Object.entries(description.operations)) {
    operations.set(name, { name, idempotent: op.idempotent === true, check: compileSchema(op.input) });
  }
  return { name: description.name, version: description.version, description, operations };
}

/** Reasons the router infers from a failed exchange, and the ones a host reports. */
const GUESSES: ReadonlySet<RemovalReason> = new Set(['gone', 'unreachable']);
const VERDICTS: ReadonlySet<RemovalReason> = new Set(['crashed', 'oom', 'exited', 'unresponsive']);

export function createRoutingTable(options: { tracker: InFlightTracker; events?: RoutingTableEvents }): RoutingTable {
  const { tracker } = options;
  const services = new Map<string, ServiceEntry>();
  const byService = new Map<string, RouteEndpoint[]>();
  const byInstance = new Map<string, RouteEndpoint>();
  const lastMessage = new Map<string, number>();
  // Recent removals, so a background sync that read the registry just before the removal
  // was recorded does not put a crashed instance back.
  const removed = new Map<string, { at: number; endpoint: RouteEndpoint; reason: RemovalReason }>();
  const none: readonly RouteEndpoint[] = [];

  const pausedById = new Map<string, RouteEndpoint>();

  const takeOut = (ep: RouteEndpoint): void => {
    byInstance.delete(ep.id);
    const list = byService.get(ep.service);
    if (list !== undefined) {
      // A fresh array: a router iterating the old one finishes on a consistent snapshot.
      const next = list.filter((e) => e.id !== ep.id);
      if (next.length === 0) byService.delete(ep.service);
      else byService.set(ep.service, next);
    }
  };

  const add = (endpoint: RouteEndpoint): void => {
    if (byInstance.has(endpoint.id)) {
      const known = byInstance.get(endpoint.id)!;
      known.token = endpoint.token;
      known.expiresAt = endpoint.expiresAt;
      known.tokenLifetimeMs = endpoint.tokenLifetimeMs;
      return;
    }
    byInstance.set(endpoint.id, endpoint);
    byService.set(endpoint.service, [...(byService.get(endpoint.service) ?? []), endpoint]);
    options.events?.onAdded?.(endpoint);
  };

  const remove = (instanceId: string, reason: RemovalReason): RouteEndpoint | undefined => {
    const frozen = pausedById.get(instanceId);
    if (frozen !== undefined) {
      pausedById.delete(instanceId);
      removed.set(instanceId, { at: Date.now(), endpoint: frozen, reason });
      options.events?.onRemoved?.(frozen, reason);
      return undefined;
    }
    const ep = byInstance.get(instanceId);
    if (ep === undefined) {
      // Already out on the router's guess; the host's word on why (a crash rule needs it) still counts.
      const earlier = removed.get(instanceId);
      if (earlier !== undefined && GUESSES.has(earlier.reason) && VERDICTS.has(reason)) {
        earlier.reason = reason;
        options.events?.onRemoved?.(earlier.endpoint, reason);
      }
      return undefined;
    }
    takeOut(ep);
    const now = Date.now();
    removed.set(instanceId, { at: now, endpoint: ep, reason });
    if (removed.size > 4096) for (const [id, r] of removed) if (now - r.at > 60_000 || removed.size > 4096) removed.delete(id);
    tracker.forget(instanceId);
    options.events?.onRemoved?.(ep, reason);
    return ep;
  };

  return {
    service: (name) => services.get(name),
    services: () => [...services.values()],
    putService(description) {
      const entry = compileService(description);
      services.set(entry.name, entry);
      return entry;
    },
    removeService(name) {
      services.delete(name);
      const gone = [...(byService.get(name) ?? []), ...[...pausedById.values()].filter((e) => e.service === name)];
      for (const ep of gone) remove(ep.id, 'undeployed');
      lastMessage.delete(name);
      return gone;
    },

    endpoints: (service) => byService.get(service) ?? none,
    endpoint: (id) => byInstance.get(id),
    allEndpoints: () => [...byInstance.values()],
    add(endpoint) {
      // A background sync re-reading a paused instance refreshes its token, not its routing.
      const frozen = pausedById.get(endpoint.id);
      if (frozen !== undefined) {
        frozen.token = endpoint.token;
        frozen.expiresAt = endpoint.expiresAt;
        frozen.tokenLifetimeMs = endpoint.tokenLifetimeMs;
        return;
      }
      add(endpoint);
    },
    remove,
    refresh(instanceId, ref) {
      const ep = byInstance.get(instanceId) ?? pausedById.get(instanceId);
      if (ep === undefined) return;
      ep.token = ref.token;
      ep.expiresAt = ref.expiresAt;
      ep.tokenLifetimeMs = Math.max(0, ref.expiresAt - Date.now());
    },

    pause(instanceId) {
      const ep = byInstance.get(instanceId);
      if (ep === undefined) return undefined;
      takeOut(ep);
      pausedById.set(instanceId, ep);
      return ep;
    },
    unpause(instanceId) {
      const ep = pausedById.get(instanceId);
      if (ep === undefined) return undefined;
      pausedById.delete(instanceId);
      add(ep);
      return ep;
    },
    paused: (service) => [...pausedById.values()].filter((e) => e.service === service),
    pausedEndpoint: (id) => pausedById.get(id),

    removedAt(instanceId) {
      const at = removed.get(instanceId)?.at;
      return at !== undefined && Date.now() - at < 60_000 ? at : undefined;
    },

    lastMessageAt: (service) => lastMessage.get(service) ?? 0,
    touch(service, now) {
      lastMessage.set(service, now);
    },
  };
}
