// Who may call what: API token roles, the token and audit views the provider's API
// (/api/v1/tokens, /api/v1/audit) returns, and the request bodies it takes. TypeBox, so
// each schema is also the static type (the CLI reads replies with them).
import { Type, type Static } from '@sinclair/typebox';

/**
 * admin: everything, tokens and the audit trail included. deploy: push images, register,
 * replace and remove services and farms (and everything read may). read: lists, events,
 * metrics. invoke: a consumer's token for `token`-access services under /s/ and /x/
 * (admin and deploy tokens may call those too).
 */
export const ApiRole = Type.Union([Type.Literal('admin'), Type.Literal('deploy'), Type.Literal('read'), Type.Literal('invoke')]);
export type ApiRole = Static<typeof ApiRole>;
export const API_ROLES: readonly ApiRole[] = ['admin', 'deploy', 'read', 'invoke'];

/** Who may send messages to a service's operations (`/s/<service>/…`, and farm paths reaching it). */
export const ServiceAccess = Type.Union([Type.Literal('public'), Type.Literal('token')], {
  description: 'public: anyone who reaches the provider; token: callers with an invoke, deploy or admin token',
});
export type ServiceAccess = Static<typeof ServiceAccess>;

export const TokenCreateBody = Type.Object(
  {
    role: ApiRole,
    /** Lifetime in seconds; unset: no expiry. */
    ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 10 * 365 * 24 * 3600 })),
    /** invoke tokens only: the services it may call (unset: every token-access service). */
    services: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' }), { minItems: 1, maxItems: 256 })),
    note: Type.Optional(Type.String({ maxLength: 256 })),
  },
  { additionalProperties: false },
);
export type TokenCreateBody = Static<typeof TokenCreateBody>;

export const TokenSummary = Type.Object({
  id: Type.String(),
  role: ApiRole,
  services: Type.Optional(Type.Array(Type.String())),
  note: Type.Optional(Type.String()),
  createdAt: Type.Number(),
  expiresAt: Type.Optional(Type.Number()),
  revokedAt: Type.Optional(Type.Number()),
});
export type TokenSummary = Static<typeof TokenSummary>;

/** POST /api/v1/tokens: the secret appears here once and is never stored. */
export const TokenCreated = Type.Object({ token: TokenSummary, secret: Type.String() });
export type TokenCreated = Static<typeof TokenCreated>;

export const AuditEntry = Type.Object({
  id: Type.Number(),
  at: Type.Number(),
  /** Unset: the call carried no valid token (it was refused). */
  tokenId: Type.Optional(Type.String()),
  role: Type.Optional(Type.String()),
  method: Type.String(),
  /** The route pattern, e.g. /api/v1/services/:name. */
  route: Type.String(),
  path: Type.String(),
  service: Type.Optional(Type.String()),
  address: Type.Optional(Type.String()),
  status: Type.Integer(),
});
export type AuditEntry = Static<typeof AuditEntry>;
