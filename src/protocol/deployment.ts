// What the provider sends a host (the deployment plan), what the host answers (the
// endpoint reference and the deployment's timeline), and what a host reports about
// itself (instances, events, load). TypeBox: each schema is also the static type, and
// the host's control API validates bodies and writes its OpenAPI document from them.
import { Type, type Static } from '@sinclair/typebox';
import { DriverCapabilities, DriverFingerprint, DriverName } from './driver.ts';

const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';

export const ServiceRef = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: 'lowercase letters, digits and -, at most 63' }),
    version: Type.String({ minLength: 1, maxLength: 128 }),
  },
  { additionalProperties: false },
);
export type ServiceRef = Static<typeof ServiceRef>;

export const PlanResources = Type.Object(
  {
    memoryMb: Type.Integer({ minimum: 16, maximum: 1024 * 1024 }),
    cpuMillis: Type.Integer({ minimum: 10, maximum: 1024 * 1000 }),
    pids: Type.Integer({ minimum: 4, maximum: 1 << 20 }),
    /** Bound of the instance's writable root layer (runc; default 64). Kept in RAM: it counts toward the memory limit too. */
    diskMb: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 * 1024 })),
  },
  { additionalProperties: false },
);
export type PlanResources = Static<typeof PlanResources>;

export const ImportBinding = Type.Object(
  {
    /** The socket the instance finds at $SHOAL_IMPORTS/<name>.sock. */
    name: Type.String({ pattern: NAME_PATTERN }),
    /** Where the import forwards: a data-plane URL (usually another host's `/i/<instance>` or a provider's `/s/<service>`). */
    url: Type.String({ pattern: '^https?://', maxLength: 2048 }),
    /** Sent as the route token with every forwarded message. */
    token: Type.Optional(Type.String({ maxLength: 4096 })),
  },
  { additionalProperties: false },
);
export type ImportBinding = Static<typeof ImportBinding>;

export const Readiness = Type.Object(
  {
    path: Type.Optional(Type.String({ pattern: '^/', maxLength: 256, default: '/healthz' })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000, default: 10_000 })),
  },
  { additionalProperties: false },
);
export type Readiness = Static<typeof Readiness>;

/** A service that listens on TCP $PORT (the Knative / Cloud Run contract) instead of Shoal's socket. */
export const ListenPort = Type.Object(
  {
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
  },
  { additionalProperties: false },
);
export type ListenPort = Static<typeof ListenPort>;

export const DeploymentPlan = Type.Object(
  {
    service: ServiceRef,
    /** Digest-pinned reference preferred (NAME@sha256:…); NAME:TAG and template://N/V accepted. */
    image: Type.String({ minLength: 1, maxLength: 512 }),
    /** Base URL of the store that holds the image. */
    store: Type.String({ pattern: '^https?://[^\\s]+$', maxLength: 2048 }),
    driver: Type.Optional(DriverName),
    /** Start from a captured state (an artifact in `store`, in the image's repository) instead of the image's start. */
    from: Type.Optional(Type.String({ pattern: '^sha256:[a-f0-9]{64}$', description: 'digest of a state artifact (POST /v1/instances/:id/snapshot)' })),
    resources: PlanResources,
    env: Type.Optional(
      Type.Record(Type.String({ pattern: ENV_NAME_PATTERN }), Type.String({ maxLength: 65536 }), {
        additionalProperties: false,
        description: 'names: letters, digits and _; SHOAL_* is reserved',
      }),
    ),
    imports: Type.Optional(Type.Array(ImportBinding, { maxItems: 64 })),
    /** The operations route tokens for it may reach (paths /i/<op>); absent = any path. */
    operations: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256, pattern: '^[^/?#]+$' }), { maxItems: 256 })),
    readiness: Type.Optional(Readiness),
    /** The $PORT contract: the program listens on TCP `port` in its own network namespace (PORT is set), not on the inherited socket. */
    listen: Type.Optional(ListenPort),
    /** Replaces the image's entrypoint+cmd. */
    args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 256 })),
  },
  { additionalProperties: false },
);
export type DeploymentPlan = Static<typeof DeploymentPlan>;

/** How a caller reaches an instance: the host's data plane plus a signed route token. */
export const EndpointReference = Type.Object({
  instance: Type.String(),
  service: ServiceRef,
  host: Type.Object({ dataUrl: Type.String() }),
  /** Where to send messages: append the operation's path (`${url}/Echo`). */
  url: Type.String(),
  /** Sent with every message to the data plane (see src/host/data-plane/route-token.ts). */
  token: Type.String(),
  /** Epoch ms after which the token is refused. */
  expiresAt: Type.Integer(),
});
export type EndpointReference = Static<typeof EndpointReference>;

/** Every phase of the flow of one message; a host fills admit…ready, the provider the rest. */
export const PhaseName = Type.Union([
  Type.Literal('queue'),
  Type.Literal('place'),
  Type.Literal('admit'),
  Type.Literal('pull'),
  Type.Literal('unpack'),
  Type.Literal('mount'),
  Type.Literal('create'),
  Type.Literal('start'),
  Type.Literal('ready'),
  Type.Literal('first-reply'),
]);
export type PhaseName = Static<typeof PhaseName>;

export const TimelinePhase = Type.Object({
  name: PhaseName,
  /** Milliseconds since the timeline's `startedAt`. */
  startMs: Type.Number(),
  endMs: Type.Number(),
});
export type TimelinePhase = Static<typeof TimelinePhase>;

export const PullStats = Type.Object({
  /** Bytes this deployment moved from the store (a layer another deployment was already pulling counts 0). */
  bytes: Type.Integer(),
  layersFetched: Type.Integer(),
  /** Layers found in the host's cache, or pulled by a concurrent deployment. */
  layersCached: Type.Integer(),
});
export type PullStats = Static<typeof PullStats>;

export const DeploymentTimeline = Type.Object({
  /** Epoch ms when the host received the plan. */
  startedAt: Type.Number(),
  phases: Type.Array(TimelinePhase),
  pull: PullStats,
  totalMs: Type.Number(),
});
export type DeploymentTimeline = Static<typeof DeploymentTimeline>;

export const InstanceState = Type.Union([
  Type.Literal('starting'),
  Type.Literal('ready'),
  Type.Literal('paused'),
  Type.Literal('stopping'),
  Type.Literal('exited'),
  Type.Literal('crashed'),
  Type.Literal('oom'),
  Type.Literal('failed'),
  /** It stopped answering its readiness probe while its process lived: stopped, out of routing. */
  Type.Literal('unresponsive'),
]);
export type InstanceState = Static<typeof InstanceState>;

export const InstanceStatsSchema = Type.Object({
  memoryBytes: Type.Optional(Type.Number()),
  cpuUsageNanos: Type.Optional(Type.Number()),
  pids: Type.Optional(Type.Number()),
});

export const InstanceExitInfo = Type.Object({
  reason: Type.String(),
  code: Type.Optional(Type.Integer()),
  signal: Type.Optional(Type.String()),
  at: Type.Number(),
});

export const InstanceInfo = Type.Object({
  id: Type.String(),
  service: ServiceRef,
  image: Type.String(),
  manifestDigest: Type.String(),
  driver: DriverName,
  state: InstanceState,
  resources: PlanResources,
  createdAt: Type.Number(),
  timeline: Type.Optional(DeploymentTimeline),
  exit: Type.Optional(InstanceExitInfo),
  stats: Type.Optional(InstanceStatsSchema),
  /** A freshly signed endpoint reference while the instance is routable. */
  endpoint: Type.Optional(EndpointReference),
});
export type InstanceInfo = Static<typeof InstanceInfo>;

/** The reply to a successful deployment. */
export const DeploymentResult = Type.Object({
  endpoint: EndpointReference,
  timeline: DeploymentTimeline,
  instance: InstanceInfo,
});
export type DeploymentResult = Static<typeof DeploymentResult>;

export const HostEventType = Type.Union([
  Type.Literal('started'),
  Type.Literal('ready'),
  Type.Literal('exited'),
  Type.Literal('crashed'),
  Type.Literal('oom'),
  Type.Literal('paused'),
  Type.Literal('resumed'),
  Type.Literal('removed'),
  /** A ready instance stopped answering its readiness probe; the host stops it (crash rules apply). */
  Type.Literal('unresponsive'),
  /** The instance's writable root layer is full: its writes fail with ENOSPC. */
  Type.Literal('instance-disk-full'),
]);
export type HostEventType = Static<typeof HostEventType>;

export const HostEvent = Type.Object({
  /** Increasing per host process; the SSE event id. */
  seq: Type.Integer(),
  type: HostEventType,
  instance: Type.String(),
  service: Type.String(),
  at: Type.Number(),
  code: Type.Optional(Type.Integer()),
  signal: Type.Optional(Type.String()),
  message: Type.Optional(Type.String()),
});
export type HostEvent = Static<typeof HostEvent>;

const Amounts = Type.Object({ memoryMb: Type.Number(), cpuMillis: Type.Number(), instances: Type.Number() });

export const HostReport = Type.Object({
  hostId: Type.String(),
  controlUrl: Type.String(),
  dataUrl: Type.String(),
  at: Type.Number(),
  capacity: Amounts,
  reserved: Amounts,
  free: Amounts,
  load: Type.Object({
    instances: Type.Integer(),
    /** Requests being forwarded right now. */
    inFlight: Type.Integer(),
    requestsTotal: Type.Integer(),
  }),
  layers: Type.Array(Type.Object({ digest: Type.String(), size: Type.Integer(), inUse: Type.Boolean() })),
  layerCache: Type.Object({ bytes: Type.Integer(), budgetBytes: Type.Integer() }),
  /** Containers created ahead (the warm pool), by service version: only current versions of registered services. */
  warm: Type.Optional(Type.Array(Type.Object({ instance: Type.String(), service: ServiceRef }))),
  drivers: Type.Array(
    Type.Object({
      name: DriverName,
      default: Type.Boolean(),
      capabilities: DriverCapabilities,
      fingerprint: DriverFingerprint,
    }),
  ),
});
export type HostReport = Static<typeof HostReport>;
