// A service definition written in TypeScript: one object that is both the JSON Schema the
// provider validates messages against (TypeBox schemas are JSON Schema) and the static
// type that handlers and clients are checked with. Its imports are other definitions, so
// a client for an import is typed by what that service offers.
import type { Static, TSchema } from '@sinclair/typebox';
import { ShoalError } from '../protocol/errors.ts';
import type { ServiceDescriptionInput } from '../protocol/index.ts';

/** One operation: `POST /<name>` with `input`, replying `output`. */
export interface OperationSpec<In extends TSchema = TSchema, Out extends TSchema = TSchema> {
  readonly input: In;
  readonly output: Out;
  /** Safe to run twice: the provider may retry it on another instance after a crash. */
  readonly idempotent?: boolean;
  readonly description?: string;
}

export type OperationMap = { readonly [operation: string]: OperationSpec };

// `any` here so that a definition with any imports of its own can be imported.
export type ImportMap = { readonly [name: string]: ServiceDefinition<string, OperationMap, any> };

type DescriptionExtras = Pick<ServiceDescriptionInput, 'resources' | 'scaling' | 'placement' | 'driver' | 'access'>;

/** What `defineService` takes. */
export interface ServiceSpec<Name extends string, Ops extends OperationMap, Imports extends ImportMap> extends DescriptionExtras {
  /** A DNS label: lowercase letters, digits and `-`. */
  readonly name: Name;
  readonly version: string;
  readonly description?: string;
  readonly operations: Ops;
  /** name → the imported service's definition; reached at `$SHOAL_IMPORTS/<name>.sock`. */
  readonly imports?: Imports;
  /** The image the provider deploys (`echo:1`, `template://node/24`, …); may be given later to toServiceDescription. */
  readonly image?: string;
}

const DEFINITION = Symbol.for('shoal.service-definition');

/** A checked, frozen service definition. */
export interface ServiceDefinition<Name extends string = string, Ops extends OperationMap = OperationMap, Imports extends ImportMap = ImportMap>
  extends DescriptionExtras {
  readonly name: Name;
  readonly version: string;
  readonly description?: string;
  readonly operations: Ops;
  readonly imports: Imports;
  readonly image?: string;
  readonly [DEFINITION]: true;
}

export type AnyService = ServiceDefinition<string, OperationMap, ImportMap>;
export type OperationName<S extends AnyService> = keyof S['operations'] & string;
/** The static type of an operation's input. */
export type InputOf<S extends AnyService, Op extends OperationName<S>> = Static<S['operations'][Op]['input']>;
/** The static type of an operation's output. */
export type OutputOf<S extends AnyService, Op extends OperationName<S>> = Static<S['operations'][Op]['output']>;

// Same grammars as src/protocol/service.ts, checked here so a mistake shows where it is written.
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const OPERATION = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

function invalid(field: string, message: string): never {
  throw new ShoalError('invalid', `defineService: ${field}: ${message}`, { field });
}

function isSchema(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isServiceDefinition(value: unknown): value is AnyService {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[DEFINITION] === true;
}

/**
 * Checks `spec` and returns it as a frozen definition whose type keeps every operation's
 * input and output schema (and so their static types).
 */
/** A definition's driver, kept as its literal type so compose can check what the driver can do (snapshot). */
export type DriverTag<Driver> = Driver extends string ? { readonly driver: Driver } : unknown;

export function defineService<const Name extends string, const Ops extends OperationMap, const Imports extends ImportMap = {}, const Driver extends string | undefined = undefined>(
  spec: ServiceSpec<Name, Ops, Imports> & { readonly driver?: Driver },
): ServiceDefinition<Name, Ops, Imports> & DriverTag<Driver> {
  if (typeof spec !== 'object' || spec === null) invalid('(root)', 'must be an object');
  if (typeof spec.name !== 'string' || !NAME.test(spec.name)) {
    invalid('name', `${JSON.stringify(spec.name)} is not a service name (lowercase letters, digits and -, at most 63)`);
  }
  if (typeof spec.version !== 'string' || !VERSION.test(spec.version)) {
    invalid('version', `${JSON.stringify(spec.version)} is not a version (letters, digits and ._+-)`);
  }
  if (typeof spec.operations !== 'object' || spec.operations === null || Object.keys(spec.operations).length === 0) {
    invalid('operations', 'must name at least one operation');
  }
  for (const [op, o] of Object.entries(spec.operations)) {
    if (!OPERATION.test(op)) invalid(`operations.${op}`, 'operation names are a letter then letters, digits or _ (at most 64)');
    if (typeof o !== 'object' || o === null) invalid(`operations.${op}`, 'must be { input, output }');
    if (!isSchema(o.input)) invalid(`operations.${op}.input`, 'must be a schema (Type.Object(...), Type.String(), ...)');
    if (!isSchema(o.output)) invalid(`operations.${op}.output`, 'must be a schema (Type.Object(...), Type.String(), ...)');
    if (o.idempotent !== undefined && typeof o.idempotent !== 'boolean') invalid(`operations.${op}.idempotent`, 'must be a boolean');
  }
  const imports = spec.imports ?? ({} as Imports);
  for (const [name, dep] of Object.entries(imports)) {
    if (!NAME.test(name)) invalid(`imports.${name}`, 'import names are lowercase letters, digits and - (they name a socket file)');
    if (!isServiceDefinition(dep)) invalid(`imports.${name}`, 'must be a definition made by defineService');
  }
  if (spec.image !== undefined && (typeof spec.image !== 'string' || spec.image === '')) invalid('image', 'must be a non-empty image reference');
  const definition = { ...spec, imports, [DEFINITION]: true as const };
  return Object.freeze(definition) as ServiceDefinition<Name, Ops, Imports> & DriverTag<Driver>;
}

/**
 * The plain JSON description the provider registers (validateServiceDescription accepts
 * it): TypeBox's markers are dropped, imports become `{ service, version }`.
 */
export function toServiceDescription(def: AnyService, overrides: { image?: string } = {}): ServiceDescriptionInput {
  if (!isServiceDefinition(def)) throw new ShoalError('invalid', 'toServiceDescription: not a definition made by defineService', { field: 'definition' });
  const image = overrides.image ?? def.image;
  if (image === undefined) {
    throw new ShoalError('invalid', `service ${def.name}: no image: give defineService({ image }) or toServiceDescription(def, { image })`, { field: 'image' });
  }
  const operations: ServiceDescriptionInput['operations'] = {};
  for (const [op, o] of Object.entries(def.operations)) {
    operations[op] = {
      input: plainSchema(o.input),
      output: plainSchema(o.output),
      idempotent: o.idempotent ?? false,
      ...(o.description === undefined ? {} : { description: o.description }),
    };
  }
  const imports: NonNullable<ServiceDescriptionInput['imports']> = {};
  for (const [name, dep] of Object.entries(def.imports)) imports[name] = { service: dep.name, version: dep.version };
  return {
    name: def.name,
    version: def.version,
    ...(def.description === undefined ? {} : { description: def.description }),
    operations,
    imports,
    image,
    ...(def.resources === undefined ? {} : { resources: { ...def.resources } }),
    ...(def.scaling === undefined ? {} : { scaling: { ...def.scaling } }),
    ...(def.placement === undefined ? {} : { placement: structuredClone(def.placement) }),
    ...(def.driver === undefined ? {} : { driver: def.driver }),
    ...(def.access === undefined ? {} : { access: def.access }),
  };
}

/** JSON round trip: TypeBox keeps its Kind marker under a symbol key, which JSON drops. */
function plainSchema(schema: TSchema): Record<string, unknown> {
  return JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
}
