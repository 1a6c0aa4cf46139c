// shoal/compose: Baltic's service combinators, typed by TypeScript. A farm script calls
// these inside `farm(name, () => { ... })`; they only build a graph (src/compose/graph.ts),
// nothing is called or started. The types carry each service definition's operations
// (input and output) and its name, so wiring an endpoint of one service where another is
// expected, mixing services in or/par, or exporting a service under another's name, does
// not compile.
import { ShoalError } from '../protocol/index.ts';
import { isServiceDefinition, toServiceDescription, type AnyService, type InputOf, type OperationName, type OutputOf } from '../service/index.ts';
import type { CrashAction, FarmGraph, GraphNode, SnapshotDriver } from '../protocol/index.ts';

// Phantom members: declared for the type checker only; values never carry them.
declare const PHANTOM: unique symbol;
declare const SERVICE: unique symbol;
/** The graph node an endpoint group stands for (a real, non-enumerable property). */
const NODE = Symbol.for('shoal.compose.node');
const SERVICE_NAME = Symbol.for('shoal.compose.service');

/**
 * One typed endpoint: the operation `operation` of node `node`, taking `I` and replying `O`.
 * Invariant in both (a function of I to I): an endpoint of a wider or narrower type is another type.
 */
export interface Endpoint<I, O> {
  readonly node: string;
  readonly operation: string;
  readonly [PHANTOM]: { readonly input: (i: I) => I; readonly output: (o: O) => O };
}

/** Anything that names a graph node of some service. */
export interface AnyExports {
  readonly [SERVICE]: string;
}

/** A service's exports: one endpoint per operation, branded with the service's name. */
export type Exports<S extends AnyService> = {
  readonly [Op in OperationName<S>]: Endpoint<InputOf<S, Op>, OutputOf<S, Op>>;
} & { readonly [SERVICE]: S['name'] };

/** A role instance (Baltic's `vm`). */
export interface Instance<S extends AnyService = AnyService> {
  readonly id: string;
  readonly service: S['name'];
  readonly [PHANTOM]: S;
}

/** A ref intermediary's handle (Baltic's `endpointref`): only `update` takes it. */
export interface RefHandle<E extends AnyExports> {
  readonly ref: string;
  readonly [PHANTOM]: (e: E) => E;
}

/** A declared snapshot of an instance (see SnapshotDecl in graph.ts for what it is on runc). */
export interface Snapshot<S extends AnyService = AnyService> {
  readonly id: string;
  readonly instance: string;
  readonly [PHANTOM]: S;
}

/** A crash action: a value the provider carries out, not a callback. */
export interface Action {
  readonly action: CrashAction;
}

/** What a role's imports must be: the exports of each imported service, by import name. */
export type RoleImports<S extends AnyService> = { readonly [K in keyof S['imports']]: Exports<S['imports'][K]> };

export interface RoleOptions {
  /** The instance's node id (and part of its provider service name). Default `<service>-<n>`. */
  name?: string;
}

/** A role (Baltic's `createXRole`): a typed function from imports to `{ instance, exports }`. */
export type Role<S extends AnyService> = (
  ...args: keyof S['imports'] extends never ? [imports?: RoleImports<S>, options?: RoleOptions] : [imports: RoleImports<S>, options?: RoleOptions]
) => { instance: Instance<S>; exports: Exports<S> };

/** A path a service may be published under: its own name, or its name and a suffix. */
export type ExportPath<E extends AnyExports> = E[typeof SERVICE] | `${E[typeof SERVICE]}-${string}`;

// ---- the builder ----

interface Builder {
  graph: FarmGraph;
  counters: Map<string, number>;
  ids: Set<string>;
}

let current: Builder | undefined;

function builder(fn: string): Builder {
  if (current === undefined) throw new ShoalError('invalid', `${fn}: call it inside farm(name, () => { ... })`, { field: fn });
  return current;
}

const NODE_ID = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

function newId(b: Builder, wanted: string | undefined, base: string): string {
  let id = wanted;
  if (id === undefined) {
    do {
      const n = (b.counters.get(base) ?? 0) + 1;
      b.counters.set(base, n);
      id = `${base}-${n}`;
    } while (b.ids.has(id));
  }
  if (!NODE_ID.test(id)) throw new ShoalError('invalid', `node name ${JSON.stringify(id)}: lowercase letters, digits and -, at most 32`, { field: 'name' });
  if (b.ids.has(id)) throw new ShoalError('conflict', `node name ${JSON.stringify(id)} is used twice in farm ${b.graph.name}`, { field: 'name' });
  b.ids.add(id);
  return id;
}

function addService(b: Builder, def: AnyService, image: string | undefined): void {
  const have = b.graph.services[def.name];
  if (have !== undefined) {
    if (have.version !== def.version) {
      throw new ShoalError('conflict', `service ${def.name}: two versions in one farm (${have.version}, ${def.version})`, { field: def.name });
    }
    if (image !== undefined && have.image === EXTERNAL) have.image = image;
    return;
  }
  b.graph.services[def.name] = toServiceDescription(def, { image: image ?? def.image ?? EXTERNAL });
}

/** The image placeholder of a service only imported from outside (never deployed). */
export const EXTERNAL = 'external';

function exportsOf<S extends AnyService>(def: AnyService, node: string): Exports<S> {
  const out: Record<string | symbol, unknown> = {};
  for (const op of Object.keys(def.operations)) out[op] = Object.freeze({ node, operation: op });
  Object.defineProperty(out, NODE, { value: node });
  Object.defineProperty(out, SERVICE_NAME, { value: def.name });
  return Object.freeze(out) as unknown as Exports<S>;
}

function nodeOf(e: unknown, fn: string, field: string): { node: string; service: string } {
  const r = e as Record<symbol, unknown> | undefined;
  const node = r?.[NODE];
  const service = r?.[SERVICE_NAME];
  if (typeof node !== 'string' || typeof service !== 'string') {
    throw new ShoalError('invalid', `${fn}: ${field} is not a service's exports (from a role, importEndpoint, or, par or ref)`, { field });
  }
  return { node, service };
}

function sameService(fn: string, list: readonly unknown[]): { nodes: string[]; service: string } {
  if (list.length === 0) throw new ShoalError('invalid', `${fn}: give at least one endpoint group`, { field: fn });
  const got = list.map((e, i) => nodeOf(e, fn, `argument ${i + 1}`));
  const service = got[0]!.service;
  for (const [i, g] of got.entries()) {
    // The types forbid this already; a script that casts its way past them still gets a clear error.
    if (g.service !== service) throw new ShoalError('invalid', `${fn}: argument ${i + 1} is ${g.service}, argument 1 is ${service}`, { field: `argument ${i + 1}` });
  }
  return { nodes: got.map((g) => g.node), service };
}

function push(b: Builder, node: GraphNode): void {
  b.graph.nodes.push(node);
}

/**
 * Builds a farm: runs `build` (which calls role, or, par, ...) and returns the graph.
 * Nothing is deployed or called; `shoal apply` sends the graph to a provider.
 */
export function farm(name: string, build: () => void): FarmGraph {
  if (!NODE_ID.test(name)) throw new ShoalError('invalid', `farm name ${JSON.stringify(name)}: lowercase letters, digits and -, at most 32`, { field: 'name' });
  if (current !== undefined) throw new ShoalError('invalid', `farm(${name}): farms do not nest (inside ${current.graph.name})`, { field: 'name' });
  const b: Builder = {
    graph: { format: 'shoal.farm/v1', name, services: {}, nodes: [], exports: [], crashRules: [], snapshots: [] },
    counters: new Map(),
    ids: new Set(),
  };
  current = b;
  try {
    build();
  } finally {
    current = undefined;
  }
  return b.graph;
}

/**
 * A role: `role(Payment)` is a function that, given the role's imports, declares one new
 * instance of the service and returns it with its exports. `image` overrides the
 * definition's image.
 */
export function role<S extends AnyService>(def: S, options: { image?: string } = {}): Role<S> {
  if (!isServiceDefinition(def)) throw new ShoalError('invalid', 'role: not a definition made by defineService', { field: 'definition' });
  const image = options.image ?? def.image;
  return ((imports?: Record<string, unknown>, o: RoleOptions = {}) => {
    const b = builder('role');
    if (image === undefined) throw new ShoalError('invalid', `role(${def.name}): no image: give defineService({ image }) or role(def, { image })`, { field: 'image' });
    addService(b, def, image);
    const bound: Record<string, string> = {};
    const given = imports ?? {};
    for (const [name, dep] of Object.entries(def.imports)) {
      if (!(name in given)) throw new ShoalError('invalid', `role(${def.name}): import ${name} (${dep.name}) is not bound`, { field: `imports.${name}` });
      const got = nodeOf(given[name], `role(${def.name})`, `imports.${name}`);
      if (got.service !== dep.name) throw new ShoalError('invalid', `role(${def.name}): import ${name} wants ${dep.name}, got ${got.service}`, { field: `imports.${name}` });
      bound[name] = got.node;
    }
    for (const name of Object.keys(given)) {
      if (!(name in def.imports)) throw new ShoalError('invalid', `role(${def.name}): ${def.name} has no import ${name}`, { field: `imports.${name}` });
    }
    const id = newId(b, o.name, def.name);
    push(b, { kind: 'instance', id, service: def.name, imports: bound });
    return { instance: Object.freeze({ id, service: def.name }) as unknown as Instance<S>, exports: exportsOf<S>(def, id) };
  }) as Role<S>;
}

/** A service outside the farm (Baltic's `importX`), reached at `url` + `/<operation>`. */
export function importEndpoint<S extends AnyService>(def: S, url: string, options: { name?: string } = {}): Exports<S> {
  const b = builder('importEndpoint');
  if (!isServiceDefinition(def)) throw new ShoalError('invalid', 'importEndpoint: not a definition made by defineService', { field: 'definition' });
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ShoalError('invalid', `importEndpoint(${def.name}): ${JSON.stringify(url)} is not a URL`, { field: 'url' });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ShoalError('invalid', `importEndpoint(${def.name}): only http(s) URLs`, { field: 'url' });
  addService(b, def, undefined);
  const id = newId(b, options.name, `${def.name}-import`);
  push(b, { kind: 'import', id, service: def.name, url: url.replace(/\/+$/, '') });
  return exportsOf<S>(def, id);
}

/**
 * Publishes `exports` on the provider as `/x/<farm>/<path>/<op>` (and `/s/<path>/<op>`, so
 * `shoal call <path> <op>` reaches it). The path must be the service's name or start with
 * it and `-`: exporting another service under a name is a type error.
 */
export function exportEndpoint<E extends AnyExports>(exports: E, path: ExportPath<NoInfer<E>>): void {
  const b = builder('exportEndpoint');
  const { node, service } = nodeOf(exports, 'exportEndpoint', 'exports');
  if (path !== service && !path.startsWith(`${service}-`)) {
    throw new ShoalError('invalid', `exportEndpoint: ${service} may be exported as ${service} or ${service}-…, not ${JSON.stringify(path)}`, { field: 'path' });
  }
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(path)) throw new ShoalError('invalid', `exportEndpoint: ${JSON.stringify(path)} is not a service name`, { field: 'path' });
  if (b.graph.exports.some((e) => e.path === path)) throw new ShoalError('conflict', `exportEndpoint: ${path} is exported twice`, { field: 'path' });
  b.graph.exports.push({ path, node, service });
}

/** Load balancing (Baltic's eOr): each message goes to one of the targets (least outstanding). */
export function or<E extends AnyExports>(first: E, ...rest: NoInfer<E>[]): E {
  return combine('or', [first, ...rest]);
}

/** Fault tolerance (Baltic's ePar): each message goes to all; the first success wins, the rest are cancelled. */
export function par<E extends AnyExports>(first: E, ...rest: NoInfer<E>[]): E {
  return combine('par', [first, ...rest]);
}

function combine<E>(kind: 'or' | 'par', list: unknown[]): E {
  const b = builder(kind);
  const { nodes, service } = sameService(kind, list);
  const id = newId(b, undefined, kind);
  push(b, { kind, id, service, targets: nodes });
  return exportsOfName(b, service, id) as E;
}

function exportsOfName(b: Builder, service: string, node: string): unknown {
  const desc = b.graph.services[service]!;
  const fake = { name: service, operations: desc.operations } as unknown as AnyService;
  return exportsOf(fake, node);
}

/** Dynamic update (Baltic's eRef): an indirection to `target` and the handle that rebinds it. */
export function ref<E extends AnyExports>(target: E, options: { name?: string } = {}): [E, RefHandle<E>] {
  const b = builder('ref');
  const { node, service } = nodeOf(target, 'ref', 'target');
  const id = newId(b, options.name, 'ref');
  push(b, { kind: 'ref', id, service, target: node });
  return [exportsOfName(b, service, id) as E, Object.freeze({ ref: id }) as unknown as RefHandle<E>];
}

/**
 * Rebinds a ref to `target` (Baltic's eRefUpdate), as a declarative action for onCrash:
 * the provider performs it atomically (messages in flight finish on the old target; none
 * is sent to it after the switch).
 */
export function update<E extends AnyExports>(handle: RefHandle<E>, target: NoInfer<E>): Action {
  const b = builder('update');
  const { node, service } = nodeOf(target, 'update', 'target');
  const refNode = b.graph.nodes.find((n) => n.kind === 'ref' && n.id === handle.ref);
  if (refNode === undefined) throw new ShoalError('not-found', `update: no ref ${handle.ref} in farm ${b.graph.name}`, { field: 'handle' });
  if (refNode.service !== service) throw new ShoalError('invalid', `update: ref ${handle.ref} is ${refNode.service}, target is ${service}`, { field: 'target' });
  return Object.freeze({ action: { kind: 'update', ref: handle.ref, target: node } as CrashAction });
}

/** Restart the crashed instance (what the provider does anyway; explicit for clarity). */
export function restart(): Action {
  return Object.freeze({ action: { kind: 'restart' } as CrashAction });
}

declare const CANNOT_SNAPSHOT: unique symbol;
/**
 * What an instance must be for snapshot(): its service declares a driver that can capture
 * running state (`driver: 'wasm'` or `'vm'` in defineService). Any other instance is a
 * compile error naming this, not a silent restart at run time.
 */
export type SnapshotCapable<S extends AnyService> = S extends { readonly driver: SnapshotDriver }
  ? unknown
  : { readonly [CANNOT_SNAPSHOT]: "this instance's service does not declare a driver that can snapshot: give defineService driver: 'wasm' or 'vm'" };

export interface SnapshotOptions {
  /** Also take it every this many ms while the farm runs (at least 10 000). */
  everyMs?: number;
}

/**
 * Declares a snapshot of an instance: when the farm is applied (and every `everyMs`), the
 * provider captures the instance's running state, memory included; restore(snap) in a
 * crash rule brings the instance back from the newest one.
 */
export function snapshot<S extends AnyService>(instance: Instance<S> & SnapshotCapable<S>, options: SnapshotOptions = {}): Snapshot<S> {
  const b = builder('snapshot');
  const id = newId(b, undefined, `snap-${instance.id}`.slice(0, 26));
  if (options.everyMs !== undefined && (!Number.isInteger(options.everyMs) || options.everyMs < 10_000)) {
    throw new ShoalError('invalid', 'snapshot: everyMs must be an integer of at least 10000', { field: 'everyMs' });
  }
  b.graph.snapshots.push({ id, instance: instance.id, ...(options.everyMs === undefined ? {} : { everyMs: options.everyMs }) });
  return Object.freeze({ id, instance: instance.id }) as unknown as Snapshot<S>;
}

/** Restore a declared snapshot (an action for onCrash). */
export function restore(snap: Snapshot): Action {
  return Object.freeze({ action: { kind: 'restore', snapshot: snap.id } as CrashAction });
}

/** Baltic's eVM with VM_Crash: when `instance` crashes, the provider carries out `actions`, in order. */
export function onCrash(instance: Instance, ...actions: Action[]): void {
  const b = builder('onCrash');
  if (!b.graph.nodes.some((n) => n.kind === 'instance' && n.id === instance.id)) {
    throw new ShoalError('not-found', `onCrash: no instance ${instance.id} in farm ${b.graph.name}`, { field: 'instance' });
  }
  if (actions.length === 0) throw new ShoalError('invalid', 'onCrash: give at least one action (update, restart, restore)', { field: 'actions' });
  const rule = b.graph.crashRules.find((r) => r.instance === instance.id);
  const list = actions.map((a) => a.action);
  if (rule) rule.actions.push(...list);
  else b.graph.crashRules.push({ instance: instance.id, actions: list });
}
