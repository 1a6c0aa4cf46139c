// The provider's control API (/api/v1/): what its replies look like. TypeBox, so each
// schema is also the static type: the provider's OpenAPI document embeds them and the
// CLI (and the dashboard) read replies with the same types.
import { Type, type Static } from '@sinclair/typebox';
import { DeploymentTimeline, EndpointReference, HostReport, InstanceState } from './deployment.ts';

export const HostRegistrationBody = Type.Object(
  {
    /** The host's control API, e.g. http://10.0.0.5:7080 */
    controlUrl: Type.String({ pattern: '^https?://', maxLength: 2048 }),
    /** The host's control-API bearer token: the provider keeps it to deploy there. */
    token: Type.String({ minLength: 8, maxLength: 4096 }),
    labels: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.String({ maxLength: 256 }))),
  },
  { additionalProperties: false },
);
export type HostRegistrationBody = Static<typeof HostRegistrationBody>;

export const HostSummary = Type.Object({
  id: Type.String(),
  state: Type.Union([Type.Literal('alive'), Type.Literal('suspect'), Type.Literal('dead')]),
  controlUrl: Type.String(),
  dataUrl: Type.String(),
  labels: Type.Record(Type.String(), Type.String()),
  /** Epoch ms of the last report (or registration). */
  lastSeen: Type.Number(),
  registeredAt: Type.Number(),
  /** This provider follows the host's event stream right now. */
  following: Type.Boolean(),
  report: Type.Optional(HostReport),
});
export type HostSummary = Static<typeof HostSummary>;

export const DeploymentState = Type.Union([
  Type.Literal('pending'),
  Type.Literal('deploying'),
  Type.Literal('ready'),
  Type.Literal('failed'),
  Type.Literal('stopped'),
]);

export const DeploymentSummary = Type.Object({
  id: Type.String(),
  service: Type.String(),
  version: Type.String(),
  state: DeploymentState,
  hostId: Type.Optional(Type.String()),
  instanceId: Type.Optional(Type.String()),
  endpoint: Type.Optional(Type.Omit(EndpointReference, ['token'])),
  /** queue, place, the host's phases (admit … ready), first-reply; ms since startedAt. */
  timeline: Type.Optional(DeploymentTimeline),
  error: Type.Optional(Type.String()),
  claimedBy: Type.Optional(Type.String()),
  createdAt: Type.Number(),
  updatedAt: Type.Number(),
});
export type DeploymentSummary = Static<typeof DeploymentSummary>;

export const InstanceSummary = Type.Object({
  id: Type.String(),
  service: Type.String(),
  version: Type.String(),
  hostId: Type.String(),
  state: InstanceState,
  driver: Type.String(),
  createdAt: Type.Number(),
  /** In this provider's routing set. */
  routable: Type.Boolean(),
  /** Messages this provider has in flight on it. */
  inFlight: Type.Integer(),
  deploymentId: Type.Optional(Type.String()),
  memoryMb: Type.Number(),
  cpuMillis: Type.Number(),
  /**
   * The live operations its driver declares (from its host's latest report): pause (and
   * resume), snapshot and suspend, fork, migrate. Absent until the host has reported.
   */
  liveOps: Type.Optional(Type.Array(Type.Union([Type.Literal('pause'), Type.Literal('snapshot'), Type.Literal('suspend'), Type.Literal('fork'), Type.Literal('migrate')]))),
});
export type InstanceSummary = Static<typeof InstanceSummary>;

export const ServiceSummary = Type.Object({
  name: Type.String(),
  version: Type.String(),
  operations: Type.Array(Type.String()),
  image: Type.String(),
  /** Ready instances this provider routes to. */
  ready: Type.Integer(),
  /** Messages waiting in the activator. */
  queued: Type.Integer(),
  createdAt: Type.Number(),
  updatedAt: Type.Number(),
});
export type ServiceSummary = Static<typeof ServiceSummary>;

export const EventSummary = Type.Object({
  id: Type.Integer(),
  at: Type.Number(),
  kind: Type.String(),
  service: Type.Optional(Type.String()),
  hostId: Type.Optional(Type.String()),
  instanceId: Type.Optional(Type.String()),
  detail: Type.Optional(Type.Unknown()),
});
export type EventSummary = Static<typeof EventSummary>;

export const DeployRequestBody = Type.Object(
  { count: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 1 })) },
  { additionalProperties: false },
);
export type DeployRequestBody = Static<typeof DeployRequestBody>;

/** PUT /api/v1/services/:name/scale: deploy or stop instances until this many run here. */
export const ScaleRequestBody = Type.Object({ instances: Type.Integer({ minimum: 0, maximum: 100 }) }, { additionalProperties: false });
export type ScaleRequestBody = Static<typeof ScaleRequestBody>;

export const ScaleReply = Type.Object({
  service: Type.String(),
  before: Type.Integer(),
  instances: Type.Integer(),
  errors: Type.Array(Type.String()),
});
export type ScaleReply = Static<typeof ScaleReply>;
