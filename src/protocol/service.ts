// A service description: what a service offers (operations with JSON Schemas), what it
// needs (imports, image, resources) and how the provider should run it (scaling,
// placement). It is data: registered as JSON, or written in TypeScript with TypeBox so
// that the same object is the schema and the static type. The provider validates it on
// registration and stores the defaulted form.
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ShoalError } from './errors.ts';
import { parseImageRef } from './image-ref.ts';
import { DriverName, Isolation } from './driver.ts';
import type { ServiceAccess } from './auth.ts';

// Same grammar as ServiceRef in deployment.ts: a DNS label.
const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
/** Operations become the last path segment of `/s/<service>/<operation>`: keep them URL-safe. */
export const OPERATION_NAME_PATTERN = '^[A-Za-z][A-Za-z0-9_]{0,63}$';
const VERSION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$';

/** A plain JSON Schema (draft 2020-12 subset); checked structurally by validateServiceDescription. */
export const JsonSchemaObject = Type.Record(Type.String(), Type.Unknown(), {
  description: 'a JSON Schema object: declares type, or one of anyOf/oneOf/allOf/not/enum/const/$ref',
});
export type JsonSchemaObject = Static<typeof JsonSchemaObject>;

export const ServiceOperation = Type.Object(
  {
    input: JsonSchemaObject,
    output: JsonSchemaObject,
    /** Safe to retry on another instance if the one handling it crashed. */
    idempotent: Type.Optional(Type.Boolean({ default: false })),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
  },
  { additionalProperties: false },
);
export type ServiceOperation = Static<typeof ServiceOperation>;

export const ServiceImport = Type.Object(
  {
    service: Type.String({ pattern: NAME_PATTERN, description: 'the imported service name' }),
    version: Type.Optional(Type.String({ pattern: VERSION_PATTERN })),
  },
  { additionalProperties: false },
);
export type ServiceImport = Static<typeof ServiceImport>;

export const ServiceResources = Type.Object(
  {
    // Same bounds as PlanResources in deployment.ts, so a valid description yields a valid plan.
    memoryMb: Type.Optional(Type.Integer({ minimum: 16, maximum: 1024 * 1024, default: 128 })),
    cpuMillis: Type.Optional(Type.Integer({ minimum: 10, maximum: 1024 * 1000, default: 500 })),
    pids: Type.Optional(Type.Integer({ minimum: 4, maximum: 1 << 20, default: 64 })),
  },
  { additionalProperties: false, default: {} },
);

export const ServiceScaling = Type.Object(
  {
    min: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, default: 0 })),
    max: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 4 })),
    /** In-flight messages per instance above which the autoscaler adds one. */
    targetConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, default: 10 })),
    /** With no message for this long, the service scales down to `min` (0: to zero). */
    idleTimeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 24 * 3600_000, default: 300_000 })),
    /**
     * What scaling to zero does to the last instance: `stop` it (the next message starts
     * afresh from the image), or `suspend` it (its state is saved to the store and the next
     * message restores it; drivers that cannot snapshot are stopped instead, and say so).
     */
    idle: Type.Optional(Type.Union([Type.Literal('stop'), Type.Literal('suspend')], { default: 'stop' })),
    /** How long a suspended state is kept for the next message (default one day). */
    keepStateMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 366 * 24 * 3600_000, default: 24 * 3600_000 })),
  },
  { additionalProperties: false, default: {} },
);

export const PlacementPolicy = Type.Union([
  Type.Literal('least-loaded'),
  Type.Literal('cache-affinity'),
  Type.Literal('host-list'),
  Type.Literal('spread'),
]);
export type PlacementPolicy = Static<typeof PlacementPolicy>;

/** What a service may require of a driver: the driver's own `Isolation` (src/protocol/driver.ts). */
export const IsolationMode = Isolation;
export type IsolationMode = Isolation;

export const PlacementRequirements = Type.Object(
  {
    isolation: Type.Optional(IsolationMode),
    canPause: Type.Optional(Type.Boolean()),
    canSnapshot: Type.Optional(Type.Boolean()),
    canMigrate: Type.Optional(Type.Boolean()),
    canClone: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type PlacementRequirements = Static<typeof PlacementRequirements>;

export const ServicePlacement = Type.Object(
  {
    /** Unset: the provider's default (least-loaded; host-list when `hosts` is given). */
    policy: Type.Optional(PlacementPolicy),
    /** Host ids the service may run on (all policies honour it; `host-list` requires it). */
    hosts: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { minItems: 1, maxItems: 1024 })),
    /** A host qualifies only if its labels include every one of these. */
    labels: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 256 }), Type.String({ maxLength: 256 }))),
    /** Driver capabilities a host must offer. */
    requires: Type.Optional(PlacementRequirements),
  },
  { additionalProperties: false, default: {} },
);

export const ServiceDescriptionSchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: 'lowercase letters, digits and -, at most 63' }),
    version: Type.String({ pattern: VERSION_PATTERN, description: 'letters, digits and ._+-, at most 128' }),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    operations: Type.Record(Type.String({ pattern: OPERATION_NAME_PATTERN }), ServiceOperation, {
      additionalProperties: false,
      minProperties: 1,
      maxProperties: 1024,
    }),
    imports: Type.Optional(
      Type.Record(Type.String({ pattern: NAME_PATTERN }), ServiceImport, {
        additionalProperties: false,
        maxProperties: 64,
        default: {},
      }),
    ),
    /**
     * NAME:TAG, NAME@sha256:… or template://N/V, resolved in the provider's store; or
     * HOST[:PORT]/NAME:TAG (any OCI registry), which the provider copies into its store
     * at registration and pins by digest.
     */
    image: Type.String({ minLength: 1, maxLength: 512 }),
    resources: Type.Optional(ServiceResources),
    scaling: Type.Optional(ServiceScaling),
    placement: Type.Optional(ServicePlacement),
    /**
     * The $PORT contract: the program listens on TCP 127.0.0.1:`port` (PORT is set in its
     * environment) in its own network namespace, instead of on Shoal's socket. For images
     * made without Shoal (the Knative / Cloud Run contract).
     */
    listen: Type.Optional(Type.Object({ port: Type.Integer({ minimum: 1, maximum: 65535 }) }, { additionalProperties: false })),
    /** The instance is ready (and alive) while GET `path` answers 200 (default /healthz). */
    readiness: Type.Optional(Type.Object({ path: Type.String({ pattern: '^/', maxLength: 256 }) }, { additionalProperties: false })),
    /** Unset: the host's default driver. */
    driver: Type.Optional(DriverName),
    /**
     * Who may send it messages: 'public' (anyone who reaches the provider) or 'token'
     * (an invoke, deploy or admin API token). Default 'token': a service is closed until
     * its author says otherwise, so registering one never opens it to the network by accident.
     */
    access: Type.Optional(Type.Union([Type.Literal('public'), Type.Literal('token')], { default: 'token' })),
  },
  { additionalProperties: false },
);

/** What an author writes: everything with a default may be left out. */
export type ServiceDescriptionInput = Static<typeof ServiceDescriptionSchema>;

export interface ServiceResourcesValue {
  memoryMb: number;
  cpuMillis: number;
  pids: number;
}
export interface ServiceScalingValue {
  min: number;
  max: number;
  targetConcurrency: number;
  idleTimeoutMs: number;
  idle: 'stop' | 'suspend';
  keepStateMs: number;
}
export type ServicePlacementValue = Static<typeof ServicePlacement>;

/** A validated description with every default applied (what the registry stores). */
export interface ServiceDescription {
  name: string;
  version: string;
  description?: string;
  operations: Record<string, ServiceOperation & { idempotent: boolean }>;
  imports: Record<string, ServiceImport>;
  image: string;
  resources: ServiceResourcesValue;
  scaling: ServiceScalingValue;
  placement: ServicePlacementValue;
  driver?: DriverName;
  listen?: { port: number };
  readiness?: { path: string };
  access: ServiceAccess;
}

/**
 * Checks `value` against the schema, applies defaults, and returns a fresh object (the
 * input is not modified). Throws ShoalError('invalid') whose `field` is the JSON pointer
 * of the first offending field, e.g. `/operations/Echo/input`.
 */
export function validateServiceDescription(value: unknown): ServiceDescription {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ShoalError('invalid', 'service description: must be a JSON object', { field: '' });
  }
  // JSON round trip: drops TypeBox's symbol keys and functions, so what we check is what we store.
  const copy: unknown = JSON.parse(JSON.stringify(value));
  const defaulted = Value.Default(ServiceDescriptionSchema, copy);
  if (!Value.Check(ServiceDescriptionSchema, defaulted)) {
    const first = Value.Errors(ServiceDescriptionSchema, defaulted).First();
    const field = first?.path ?? '';
    throw new ShoalError('invalid', `service description: ${field || '(root)'}: ${first?.message ?? 'invalid'}`, { field });
  }
  const desc = defaulted as ServiceDescription;
  try {
    parseImageRef(desc.image, '/image', { foreign: true });
  } catch (e) {
    throw new ShoalError('invalid', `service description: /image: ${(e as Error).message}`, { field: '/image', cause: e });
  }
  for (const [op, spec] of Object.entries(desc.operations)) {
    spec.idempotent ??= false; // Value.Default does not descend into records without a default of their own
    checkJsonSchema(spec.input, `/operations/${op}/input`);
    checkJsonSchema(spec.output, `/operations/${op}/output`);
  }
  if (desc.scaling.max < desc.scaling.min) {
    invalid('/scaling/max', `must be at least scaling.min (${desc.scaling.min}), got ${desc.scaling.max}`);
  }
  if (desc.placement.policy === 'host-list' && desc.placement.hosts === undefined) {
    invalid('/placement/hosts', "is required when placement.policy is 'host-list'");
  }
  return desc;
}

function invalid(field: string, message: string): never {
  throw new ShoalError('invalid', `service description: ${field}: ${message}`, { field });
}

const JSON_TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);
const COMBINATORS = ['anyOf', 'oneOf', 'allOf'] as const;
const SUBSCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions'] as const;
const SUBSCHEMAS = ['not', 'items', 'additionalProperties', 'contains', 'propertyNames', 'if', 'then', 'else'] as const;

/**
 * A light structural check, not a meta-schema validation: enough to catch a wrong shape
 * (a string where a schema belongs, an unknown type name, a `required` that is not a
 * list of names) at registration rather than on the first message.
 */
function checkJsonSchema(schema: unknown, at: string, top = true): void {
  if (typeof schema === 'boolean' && !top) return; // `additionalProperties: false` etc.
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    invalid(at, 'must be a JSON Schema object');
  }
  const s = schema as Record<string, unknown>;
  const hasType = s.type !== undefined;
  if (hasType) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (types.length === 0) invalid(`${at}/type`, 'must name at least one type');
    for (const t of types) {
      if (typeof t !== 'string' || !JSON_TYPES.has(t)) {
        invalid(`${at}/type`, `unknown JSON Schema type ${JSON.stringify(t)} (expected one of ${[...JSON_TYPES].join(', ')})`);
      }
    }
  }
  for (const key of COMBINATORS) {
    if (s[key] === undefined) continue;
    const list = s[key];
    if (!Array.isArray(list) || list.length === 0) invalid(`${at}/${key}`, 'must be a non-empty array of schemas');
    list.forEach((sub, i) => checkJsonSchema(sub, `${at}/${key}/${i}`, false));
  }
  for (const key of SUBSCHEMAS) {
    if (s[key] !== undefined) checkJsonSchema(s[key], `${at}/${key}`, false);
  }
  for (const key of SUBSCHEMA_MAPS) {
    if (s[key] === undefined) continue;
    const map = s[key];
    if (typeof map !== 'object' || map === null || Array.isArray(map)) invalid(`${at}/${key}`, 'must be an object of schemas');
    for (const [name, sub] of Object.entries(map)) checkJsonSchema(sub, `${at}/${key}/${escapePointer(name)}`, false);
  }
  if (s.required !== undefined && (!Array.isArray(s.required) || s.required.some((r) => typeof r !== 'string'))) {
    invalid(`${at}/required`, 'must be an array of property names');
  }
  if (s.enum !== undefined && !Array.isArray(s.enum)) invalid(`${at}/enum`, 'must be an array');
  if (s.$ref !== undefined && typeof s.$ref !== 'string') invalid(`${at}/$ref`, 'must be a string');
  if (top) {
    const declares = hasType || COMBINATORS.some((k) => s[k] !== undefined) || ['not', 'enum', 'const', '$ref'].some((k) => s[k] !== undefined);
    if (!declares) invalid(at, 'must declare a type, or one of anyOf/oneOf/allOf/not/enum/const/$ref');
  }
}

function escapePointer(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}
