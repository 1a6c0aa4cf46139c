// Farms in the provider's data plane. A farm graph (src/protocol/farm-graph.ts) applied here
// becomes: one provider service per role instance (`<farm>-<node>`, exactly one instance),
// the intermediaries (engine.ts) composed in process, import bindings that point each
// instance's import sockets at the node the script wired them to (`/x/<farm>/<instance>/<import>`,
// resolved per message), and
// crash rules carried out when the provider sees an instance crash: no script runs then.
// Every message entering a farm is checked against the operation's input schema.
import { Agent, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import { ShoalError, errorReply, farmSnapshotLabel, isShoalError } from '../../protocol/index.ts';
import type { ImportBinding, ServiceDescriptionInput, CrashAction, FarmGraph, GraphNode, SnapshotDecl } from '../../protocol/index.ts';
import { compileSchema, type SchemaCheck } from '../json-schema.ts';
import { createOr, createPar, createRef, type RefTarget, type Reply, type Target } from './engine.ts';
import { forConsumer } from '../router.ts';

export const FARM_PREFIX = '/x/';
const FARMS_API = '/api/v1/farms';
const FARM_EVENT = 'farm-applied';
const FARM_REMOVED = 'farm-removed';
const NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

export interface FarmEngineOptions {
  /** Events persist applied farms (kind `farm-applied`), so a restarted provider restores them. */
  registry: {
    appendEvent(e: { kind: string; service?: string; instanceId?: string; detail?: unknown }): Promise<unknown>;
    listEvents(f: { kind?: string; limit?: number }): Promise<Array<{ id: number; kind: string; detail: unknown }>>;
  };
  /** This provider's own URL (leaves are sent to `${url}/s/<service>/<op>`; imports bound to `${url}/x/...`). */
  providerUrl(): string;
  registerService(description: ServiceDescriptionInput): Promise<void>;
  /**
   * Sends a message to an instance service in process (the router's invoke): with it, a
   * farm's instances are reached without an HTTP hop to this provider's own /s/.
   */
  invoke?(service: string, operation: string, body: string, signal?: AbortSignal): Promise<Reply>;
  /** An invoke API token: sent on the engine's own calls to instance services, and given to instances for their imports. */
  token?(): string | undefined;
  /** Brings up an instance service (after registration, and for `restart`). */
  deploy?(service: string): Promise<unknown>;
  /** Whether some host offers `driver` with snapshots (a farm naming another is refused). */
  canSnapshot?(driver: string | undefined): boolean;
  /** Captures the running instance of `service` as a saved state labelled `label`. */
  snapshot?(service: string, label: string): Promise<unknown>;
  /** Starts `service` again from its newest state labelled `label`; false when there is none. */
  restore?(service: string, label: string): Promise<boolean>;
  log?: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  maxBodyBytes?: number;
  timeoutMs?: number;
}

export interface FarmChange {
  kind: 'added' | 'removed' | 'changed';
  what: 'node' | 'export' | 'crash-rule' | 'service';
  id: string;
}

export interface ApplyResult {
  farm: string;
  changed: boolean;
  changes: FarmChange[];
  /** The provider services that run the farm's instances (`<farm>-<node>`). */
  services: string[];
}

export interface FarmStatus {
  name: string;
  graph: FarmGraph;
  refs: Record<string, string>;
  crashes: Array<{ at: number; instance: string; actions: CrashAction[] }>;
}

export interface FarmEngine {
  /** Does this request belong to the farms (the /x/ data path, /s/<exported name>/, or the farms API)? */
  handles(url: string): boolean;
  handle(req: IncomingMessage, res: ServerResponse): void;
  apply(graph: unknown): Promise<ApplyResult>;
  remove(name: string): Promise<boolean>;
  get(name: string): FarmStatus | undefined;
  list(): FarmStatus[];
  /** The import bindings of a farm instance's service (undefined: not a farm instance). */
  importsFor(service: string): ImportBinding[] | undefined;
  /** The provider saw an instance of `service` leave; crash rules fire for crashed/oom. */
  onInstanceGone(service: string, reason: string): void;
  /** Re-applies the farms recorded in the registry (provider start). */
  restore(): Promise<void>;
  /** Resolves when crash actions started so far have finished (tests). */
  settled(): Promise<void>;
  close(): void;
}

interface Running {
  graph: FarmGraph;
  /** Timers of snapshots declared with everyMs. */
  timers: Array<ReturnType<typeof setInterval>>;
  targets: Map<string, Target>;
  refs: Map<string, RefTarget>;
  checks: Map<string, Map<string, SchemaCheck>>;
  crashes: FarmStatus['crashes'];
}

export function instanceServiceName(farm: string, node: string): string {
  return `${farm}-${node}`;
}

/** Checks a graph's shape and that every edge joins nodes of the same service (message safety, again, on the provider's side). */
export function validateFarmGraph(value: unknown): FarmGraph {
  const bad = (field: string, msg: string): never => {
    throw new ShoalError('invalid', `farm: ${field}: ${msg}`, { field });
  };
  if (typeof value !== 'object' || value === null) bad('(root)', 'must be a farm graph object');
  const g = value as FarmGraph;
  if (g.format !== 'shoal.farm/v1') bad('format', `must be "shoal.farm/v1", got ${JSON.stringify(g.format)}`);
  if (typeof g.name !== 'string' || !NAME.test(g.name)) bad('name', 'lowercase letters, digits and -, at most 32');
  if (typeof g.services !== 'object' || g.services === null || !Array.isArray(g.nodes) || !Array.isArray(g.exports) || !Array.isArray(g.crashRules)) {
    bad('(root)', 'needs services, nodes, exports and crashRules');
  }
  g.snapshots ??= [];
  if (!Array.isArray(g.snapshots)) bad('snapshots', 'must be an array');
  const nodes = new Map<string, GraphNode>();
  for (const [i, n] of g.nodes.entries()) {
    if (typeof n?.id !== 'string' || !NAME.test(n.id)) bad(`nodes/${i}/id`, 'a node id: lowercase letters, digits and -');
    if (nodes.has(n.id)) bad(`nodes/${i}/id`, `${n.id} appears twice`);
    if (!(n.service in g.services)) bad(`nodes/${i}/service`, `no service ${JSON.stringify(n.service)} in services`);
    nodes.set(n.id, n);
  }
  const target = (at: string, id: unknown, service: string): void => {
    const t = typeof id === 'string' ? nodes.get(id) : undefined;
    if (t === undefined) bad(at, `no node ${JSON.stringify(id)}`);
    if (t!.service !== service) bad(at, `${t!.id} is ${t!.service}, ${service} expected`);
  };
  for (const [i, n] of g.nodes.entries()) {
    switch (n.kind) {
      case 'instance': {
        const desc = g.services[n.service]!;
        if (instanceServiceName(g.name, n.id).length > 63) bad(`nodes/${i}/id`, `${g.name}-${n.id} is longer than 63 characters`);
        const wanted = desc.imports ?? {};
        for (const [name, imp] of Object.entries(wanted)) {
          if (!(name in (n.imports ?? {}))) bad(`nodes/${i}/imports/${name}`, 'not bound');
          target(`nodes/${i}/imports/${name}`, n.imports[name], imp.service);
        }
        for (const name of Object.keys(n.imports ?? {})) if (!(name in wanted)) bad(`nodes/${i}/imports/${name}`, `${n.service} has no import ${name}`);
        break;
      }
      case 'import':
        if (typeof n.url !== 'string' || !/^https?:\/\//.test(n.url)) bad(`nodes/${i}/url`, 'must be an http(s) URL');
        break;
      case 'or':
      case 'par':
        if (!Array.isArray(n.targets) || n.targets.length === 0) bad(`nodes/${i}/targets`, 'at least one target');
        n.targets.forEach((t, j) => target(`nodes/${i}/targets/${j}`, t, n.service));
        break;
      case 'ref':
        target(`nodes/${i}/target`, n.target, n.service);
        break;
      default:
        bad(`nodes/${i}/kind`, `unknown kind ${JSON.stringify((n as { kind: unknown }).kind)}`);
    }
  }
  for (const [i, s] of g.snapshots.entries()) {
    if (typeof s?.id !== 'string' || !NAME.test(s.id)) bad(`snapshots/${i}/id`, 'a snapshot id: lowercase letters, digits and -');
    if (nodes.get(s.instance)?.kind !== 'instance') bad(`snapshots/${i}/instance`, `no instance ${JSON.stringify(s.instance)}`);
    if (s.everyMs !== undefined && (!Number.isInteger(s.everyMs) || s.everyMs < 10_000 || s.everyMs > 7 * 24 * 3600_000)) bad(`snapshots/${i}/everyMs`, 'an integer from 10000 (10 s) to a week');
  }
  const paths = new Set<string>();
  for (const [i, e] of g.exports.entries()) {
    if (typeof e.path !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(e.path)) bad(`exports/${i}/path`, 'a service name');
    if (paths.has(e.path)) bad(`exports/${i}/path`, `${e.path} exported twice`);
    paths.add(e.path);
    target(`exports/${i}/node`, e.node, e.service);
    if (e.path !== e.service && !e.path.startsWith(`${e.service}-`)) bad(`exports/${i}/path`, `${e.service} may only be exported as ${e.service} or ${e.service}-…`);
  }
  for (const [i, r] of g.crashRules.entries()) {
    const inst = nodes.get(r.instance);
    if (inst?.kind !== 'instance') bad(`crashRules/${i}/instance`, `no instance ${JSON.stringify(r.instance)}`);
    for (const [j, a] of r.actions.entries()) {
      if (a.kind === 'update') {
        const ref = nodes.get(a.ref);
        if (ref?.kind !== 'ref') bad(`crashRules/${i}/actions/${j}/ref`, `no ref ${JSON.stringify(a.ref)}`);
        target(`crashRules/${i}/actions/${j}/target`, a.target, ref!.service);
      } else if (a.kind === 'restore') {
        const snap = g.snapshots.find((s) => s.id === a.snapshot);
        if (snap === undefined) bad(`crashRules/${i}/actions/${j}/snapshot`, `no snapshot ${JSON.stringify(a.snapshot)}`);
        if (snap!.instance !== r.instance) bad(`crashRules/${i}/actions/${j}/snapshot`, `snapshot ${snap!.id} is of ${snap!.instance}, not of ${r.instance}`);
      } else if (a.kind !== 'restart') bad(`crashRules/${i}/actions/${j}/kind`, 'update, restart or restore');
    }
  }
  return g;
}

/** What differs between two graphs of one farm (empty: applying changes nothing). */
export function diffFarms(before: FarmGraph | undefined, after: FarmGraph): FarmChange[] {
  const changes: FarmChange[] = [];
  const cmp = <T>(what: FarmChange['what'], a: Map<string, T>, b: Map<string, T>) => {
    for (const [id, v] of b) {
      if (!a.has(id)) changes.push({ kind: 'added', what, id });
      else if (!isDeepStrictEqual(a.get(id), v)) changes.push({ kind: 'changed', what, id });
    }
    for (const id of a.keys()) if (!b.has(id)) changes.push({ kind: 'removed', what, id });
  };
  const by = <T extends object>(list: readonly T[] | undefined, key: (t: T) => string) => new Map((list ?? []).map((t) => [key(t), t]));
  cmp('service', new Map(Object.entries(before?.services ?? {})), new Map(Object.entries(after.services)));
  cmp('node', by(before?.nodes, (n) => n.id), by(after.nodes, (n) => n.id));
  cmp('export', by(before?.exports, (e) => e.path), by(after.exports, (e) => e.path));
  cmp('crash-rule', by(before?.crashRules, (r) => r.instance), by(after.crashRules, (r) => r.instance));
  return changes;
}

export function createFarmEngine(options: FarmEngineOptions): FarmEngine {
  const farms = new Map<string, Running>();
  const exported = new Map<string, { farm: string; node: string; service: string }>();
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const maxBody = options.maxBodyBytes ?? 10 * 1024 * 1024;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const pending = new Set<Promise<unknown>>();
  const log = options.log ?? { info() {}, warn() {} };

  function bearer(): Record<string, string> {
    const token = options.token?.();
    return token === undefined ? {} : { authorization: `Bearer ${token}` };
  }

  function httpLeaf(id: string, base: string): Target {
    return {
      id,
      send(operation, body, signal) {
        return new Promise<Reply>((resolve, reject) => {
          const u = new URL(`${base}/${operation}`);
          const req = request(
            u,
            { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...bearer() }, ...(signal ? { signal } : {}), timeout: timeoutMs },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => resolve({ status: res.statusCode ?? 502, body: Buffer.concat(chunks).toString('utf8'), contentType: String(res.headers['content-type'] ?? 'application/json') }));
              res.on('error', reject);
            },
          );
          req.on('timeout', () => req.destroy(new ShoalError('timeout', `${id}: no reply within ${timeoutMs} ms`)));
          req.on('error', reject);
          req.end(body);
        });
      },
    };
  }

  function build(graph: FarmGraph, previous: Running | undefined): Running {
    const byId = new Map(graph.nodes.map((n) => [n.id, n]));
    const targets = new Map<string, Target>();
    const refs = new Map<string, RefTarget>();
    const building = new Set<string>();
    const make = (id: string): Target => {
      const have = targets.get(id);
      if (have) return have;
      if (building.has(id)) throw new ShoalError('invalid', `farm ${graph.name}: intermediaries form a cycle through ${id}`, { field: id });
      building.add(id);
      const n = byId.get(id)!;
      let t: Target;
      if (n.kind === 'instance') {
        const service = instanceServiceName(graph.name, id);
        const invoke = options.invoke;
        t = invoke === undefined ? httpLeaf(id, `${options.providerUrl()}/s/${service}`) : { id, send: (operation, body, signal) => invoke(service, operation, body, signal) };
      }
      else if (n.kind === 'import') t = httpLeaf(id, n.url);
      else if (n.kind === 'or') {
        const ops = graph.services[n.service]!.operations;
        // Another target may take a message its first target failed, when doing it twice is safe.
        t = createOr(id, n.targets.map(make), {
          retryable: (op, f) => ops[op]?.idempotent === true && ('error' in f || f.reply.status === 502 || f.reply.status === 503 || f.reply.status === 504),
        });
      }
      else if (n.kind === 'par') t = createPar(id, n.targets.map(make));
      else {
        // A ref rebound by a crash rule keeps its binding across a re-apply that leaves it as declared.
        const old = previous?.graph.nodes.find((o) => o.id === id);
        const boundTo = old?.kind === 'ref' && old.target === n.target ? previous?.refs.get(id)?.current().id : undefined;
        const r = createRef(id, make(boundTo !== undefined && byId.has(boundTo) ? boundTo : n.target));
        refs.set(id, r);
        t = r;
      }
      building.delete(id);
      targets.set(id, t);
      return t;
    };
    for (const n of graph.nodes) make(n.id);
    const checks = new Map<string, Map<string, SchemaCheck>>();
    for (const [name, desc] of Object.entries(graph.services)) {
      checks.set(name, new Map(Object.entries(desc.operations).map(([op, spec]) => [op, compileSchema(spec.input)])));
    }
    return { graph, targets, refs, checks, crashes: previous?.crashes ?? [], timers: [] };
  }

  function instanceDescription(graph: FarmGraph, node: GraphNode): ServiceDescriptionInput {
    const desc = structuredClone(graph.services[node.service]!);
    return {
      ...desc,
      name: instanceServiceName(graph.name, node.id),
      description: `farm ${graph.name}: instance ${node.id} of ${node.service}`,
      // One instance per role instance: the farm script decides how many there are.
      scaling: { ...(desc.scaling ?? {}), min: 1, max: 1 },
    };
  }

  function reindexExports(): void {
    exported.clear();
    for (const f of farms.values()) for (const e of f.graph.exports) exported.set(e.path, { farm: f.graph.name, node: e.node, service: e.service });
  }

  async function apply(value: unknown, restoring = false): Promise<ApplyResult> {
    const graph = validateFarmGraph(structuredClone(value));
    const previous = farms.get(graph.name);
    const changes = diffFarms(previous?.graph, graph);
    const services = graph.nodes.filter((n) => n.kind === 'instance').map((n) => instanceServiceName(graph.name, n.id));
    if (previous !== undefined && changes.length === 0) return { farm: graph.name, changed: false, changes, services };
    for (const path of graph.exports.map((e) => e.path)) {
      const other = exported.get(path);
      if (other !== undefined && other.farm !== graph.name) throw new ShoalError('conflict', `farm ${graph.name}: ${path} is already exported by farm ${other.farm}`, { field: 'exports' });
    }
    graph.snapshots.forEach((s, i) => {
      const node = graph.nodes.find((n) => n.id === s.instance)!;
      const driver = graph.services[node.service]?.driver;
      if (options.canSnapshot !== undefined && !options.canSnapshot(driver)) {
        throw new ShoalError('invalid', `farm ${graph.name}: snapshot ${s.id} names ${s.instance}, whose driver (${driver ?? 'the host default'}) cannot snapshot: no host offers it with snapshots`, { field: `snapshots/${i}/instance` });
      }
    });
    const running = build(graph, previous);
    const changedNodes = new Set(changes.filter((c) => c.what === 'node' || c.what === 'service').map((c) => c.id));
    // Restoring (provider restart): the services are in the registry already and the reconciler keeps them running.
    for (const n of restoring ? [] : graph.nodes) {
      if (n.kind !== 'instance') continue;
      if (previous !== undefined && !changedNodes.has(n.id) && !changedNodes.has(n.service)) continue;
      await options.registerService(instanceDescription(graph, n));
    }
    for (const t of previous?.timers ?? []) clearInterval(t);
    farms.set(graph.name, running);
    reindexExports();
    if (!restoring) await options.registry.appendEvent({ kind: FARM_EVENT, detail: graph });
    const deploying = new Map<string, Promise<unknown>>();
    for (const s of restoring ? [] : services) {
      if (previous === undefined || changes.some((c) => c.kind === 'added' && c.what === 'node' && s === instanceServiceName(graph.name, c.id))) {
        const d = options.deploy?.(s);
        if (d !== undefined) deploying.set(s, d);
        track(d, 'farm: deploy failed', { farm: graph.name, service: s });
      }
    }
    for (const snap of graph.snapshots) scheduleSnapshot(running, snap, restoring ? undefined : deploying.get(instanceServiceName(graph.name, snap.instance)) ?? Promise.resolve());
    log.info({ farm: graph.name, changes: changes.length }, 'farm applied');
    return { farm: graph.name, changed: true, changes, services };
  }

  /** Takes the declared snapshot once the instance is up (`first`), then every everyMs. */
  function scheduleSnapshot(r: Running, snap: SnapshotDecl, first: Promise<unknown> | undefined): void {
    if (options.snapshot === undefined) return;
    const service = instanceServiceName(r.graph.name, snap.instance);
    const label = farmSnapshotLabel(r.graph.name, snap.id);
    const take = () => track(options.snapshot!(service, label), 'farm: taking a declared snapshot failed', { farm: r.graph.name, snapshot: snap.id });
    if (first !== undefined) track(first.then(() => (farms.get(r.graph.name) === r ? options.snapshot!(service, label) : undefined)), 'farm: taking a declared snapshot failed', { farm: r.graph.name, snapshot: snap.id });
    if (snap.everyMs !== undefined) {
      const timer = setInterval(take, snap.everyMs);
      timer.unref();
      r.timers.push(timer);
    }
  }

  function track(p: Promise<unknown> | undefined, what = 'farm: deploy failed', context: object = {}): void {
    if (p === undefined) return;
    const q = p.catch((e: unknown) => log.warn({ ...context, err: String(e) }, what));
    pending.add(q);
    void q.finally(() => pending.delete(q));
  }

  function status(r: Running): FarmStatus {
    return { name: r.graph.name, graph: r.graph, refs: Object.fromEntries([...r.refs].map(([id, ref]) => [id, ref.current().id])), crashes: [...r.crashes] };
  }

  function onInstanceGone(service: string, reason: string): void {
    if (reason !== 'crashed' && reason !== 'oom' && reason !== 'unresponsive') return;
    for (const f of farms.values()) {
      const node = f.graph.nodes.find((n) => n.kind === 'instance' && instanceServiceName(f.graph.name, n.id) === service);
      if (node === undefined) continue;
      const rule = f.graph.crashRules.find((r) => r.instance === node.id);
      if (rule === undefined) continue;
      f.crashes.push({ at: Date.now(), instance: node.id, actions: rule.actions });
      if (f.crashes.length > 100) f.crashes.shift();
      for (const a of rule.actions) {
        if (a.kind === 'update') {
          const ref = f.refs.get(a.ref);
          const to = f.targets.get(a.target);
          if (ref === undefined || to === undefined) continue;
          ref.update(to);
          log.info({ farm: f.graph.name, ref: a.ref, target: a.target, crashed: node.id }, 'crash rule: ref rebound');
        } else if (a.kind === 'restore' && options.restore !== undefined) {
          // Back with the memory it had at the snapshot; with no state taken yet, from the image.
          const label = farmSnapshotLabel(f.graph.name, a.snapshot);
          const farm = f.graph.name;
          track(
            options.restore(service, label).then((restored) => {
              if (restored) return undefined;
              log.warn({ farm, service, snapshot: a.snapshot }, 'crash rule: no state taken for the snapshot yet; starting the instance from its image');
              return options.deploy?.(service);
            }),
            'farm: crash rule: restore failed',
            { farm, service },
          );
        } else {
          track(options.deploy?.(service), 'farm: crash rule: deploy failed', { farm: f.graph.name, service });
        }
      }
      track(
        options.registry.appendEvent({ kind: 'farm-crash-rule', service, detail: { farm: f.graph.name, instance: node.id, actions: rule.actions } }),
        'farm: registry write failed: the farm-crash-rule event',
        { farm: f.graph.name, instance: node.id },
      );
    }
  }

  // ---- HTTP ----

  function send(res: ServerResponse, status: number, body: unknown): void {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
  function sendError(res: ServerResponse, e: unknown): void {
    const { status, body } = errorReply(isShoalError(e) ? e : new ShoalError('unavailable', String((e as Error)?.message ?? e)));
    if (!res.headersSent) send(res, status, body);
    else res.destroy();
  }
  function readBody(req: IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBody) {
          reject(new ShoalError('too-large', `message larger than ${maxBody} bytes`));
          req.destroy();
        } else chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  async function message(req: IncomingMessage, res: ServerResponse, f: Running, nodeId: string, op: string): Promise<void> {
    const node = f.graph.nodes.find((n) => n.id === nodeId);
    const target = f.targets.get(nodeId);
    if (node === undefined || target === undefined) throw new ShoalError('not-found', `farm ${f.graph.name} has no node ${JSON.stringify(nodeId)}`, { field: 'node' });
    const check = f.checks.get(node.service)?.get(op);
    if (check === undefined) throw new ShoalError('not-found', `${node.service} has no operation ${JSON.stringify(op)}`, { field: 'operation' });
    if (req.method !== 'POST') throw new ShoalError('invalid', `send messages with POST, not ${req.method}`, { field: 'method' });
    const text = await readBody(req);
    let input: unknown;
    try {
      input = text === '' ? {} : JSON.parse(text);
    } catch (e) {
      throw new ShoalError('invalid', `body: not JSON (${(e as Error).message})`, { field: 'body' });
    }
    const err = check(input);
    if (err !== undefined) throw new ShoalError('invalid', `${node.service}.${op} input${err.path}: ${err.message}`, { field: err.path || 'body' });
    const ac = new AbortController();
    res.on('close', () => !res.writableFinished && ac.abort(new ShoalError('unavailable', 'caller went away')));
    const reply = await target.send(op, text === '' ? '{}' : text, ac.signal);
    res.writeHead(reply.status, forConsumer(['content-type', reply.contentType ?? 'application/json', 'content-length', String(Buffer.byteLength(reply.body))]));
    res.end(reply.body);
  }

  async function api(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const name = decodeURIComponent(path.slice(FARMS_API.length).replace(/^\//, '').replace(/\/$/, ''));
    if (name === '') {
      if (req.method !== 'GET') throw new ShoalError('invalid', `${req.method} ${FARMS_API}: use GET`, { field: 'method' });
      return send(res, 200, { farms: [...farms.values()].map((f) => ({ name: f.graph.name, nodes: f.graph.nodes.length, exports: f.graph.exports.map((e) => e.path) })) });
    }
    if (req.method === 'GET') {
      const f = farms.get(name);
      if (f === undefined) throw new ShoalError('not-found', `no farm named ${JSON.stringify(name)}`, { field: 'name' });
      return send(res, 200, status(f));
    }
    if (req.method === 'PUT') {
      const text = await readBody(req);
      let graph: unknown;
      try {
        graph = JSON.parse(text);
      } catch (e) {
        throw new ShoalError('invalid', `body: not JSON (${(e as Error).message})`, { field: 'body' });
      }
      if ((graph as FarmGraph)?.name !== name) throw new ShoalError('invalid', `the graph is farm ${JSON.stringify((graph as FarmGraph)?.name)}, the path says ${name}`, { field: 'name' });
      const r = await apply(graph);
      return send(res, 200, r);
    }
    if (req.method === 'DELETE') {
      if (!(await remove(name))) throw new ShoalError('not-found', `no farm named ${JSON.stringify(name)}`, { field: 'name' });
      return send(res, 200, { removed: name });
    }
    throw new ShoalError('invalid', `${req.method} not allowed on ${FARMS_API}/${name}`, { field: 'method' });
  }

  async function remove(name: string): Promise<boolean> {
    for (const t of farms.get(name)?.timers ?? []) clearInterval(t);
    if (!farms.delete(name)) return false;
    reindexExports();
    await options.registry.appendEvent({ kind: FARM_REMOVED, detail: { name } });
    return true;
  }

  return {
    handles(url) {
      if (url.startsWith(FARM_PREFIX) || url === FARMS_API || url.startsWith(`${FARMS_API}/`) || url.startsWith(`${FARMS_API}?`)) return true;
      if (!url.startsWith('/s/') || exported.size === 0) return false;
      const name = url.slice(3).split('/', 1)[0]!;
      return exported.has(name);
    },
    handle(req, res) {
      const path = (req.url ?? '/').split('?', 1)[0]!;
      const run = async () => {
        if (path === FARMS_API || path.startsWith(`${FARMS_API}/`)) return api(req, res, path);
        if (path.startsWith('/s/')) {
          const [name, op] = path.slice(3).split('/');
          const e = exported.get(name ?? '');
          const f = e && farms.get(e.farm);
          if (!e || !f || !op) throw new ShoalError('not-found', `no route ${path}`, { field: 'path' });
          return message(req, res, f, e.node, op);
        }
        const parts = path.slice(FARM_PREFIX.length).split('/');
        const f = farms.get(parts[0] ?? '');
        if (f === undefined) throw new ShoalError('not-found', `no farm named ${JSON.stringify(parts[0])}`, { field: 'farm' });
        if (parts.length === 4) {
          // /x/<farm>/<instance>/<import>/<op>: what an instance's import socket is bound to. It is
          // resolved per message, so re-applying a rewired farm needs no redeploy.
          const [, instance, importName, op] = parts as [string, string, string, string];
          const inst = f.graph.nodes.find((n) => n.id === instance);
          const to = inst?.kind === 'instance' ? inst.imports[importName] : undefined;
          if (to === undefined) throw new ShoalError('not-found', `farm ${f.graph.name}: no instance ${instance} with import ${importName}`, { field: 'path' });
          return message(req, res, f, to, op);
        }
        const [, node, op, ...rest] = parts;
        if (!node || !op || rest.length > 0) throw new ShoalError('not-found', `farm paths are ${FARM_PREFIX}<farm>/<node>/<operation>`, { field: 'path' });
        // An export name also works in place of its node.
        const viaExport = f.graph.exports.find((x) => x.path === node)?.node;
        return message(req, res, f, f.targets.has(node) ? node : (viaExport ?? node), op);
      };
      run().catch((e: unknown) => sendError(res, e));
    },
    apply: (graph) => apply(graph),
    remove,
    get: (name) => {
      const f = farms.get(name);
      return f === undefined ? undefined : status(f);
    },
    list: () => [...farms.values()].map(status),
    importsFor(service) {
      for (const f of farms.values()) {
        for (const n of f.graph.nodes) {
          if (n.kind !== 'instance' || instanceServiceName(f.graph.name, n.id) !== service) continue;
          const token = options.token?.();
          return Object.keys(n.imports).map((name) => ({ name, url: `${options.providerUrl()}${FARM_PREFIX}${f.graph.name}/${n.id}/${name}`, ...(token === undefined ? {} : { token }) }));
        }
      }
      return undefined;
    },
    onInstanceGone,
    async restore() {
      const events = [
        ...(await options.registry.listEvents({ kind: FARM_EVENT, limit: 10_000 })),
        ...(await options.registry.listEvents({ kind: FARM_REMOVED, limit: 10_000 })),
      ].sort((a, b) => a.id - b.id);
      const latest = new Map<string, FarmGraph | undefined>();
      for (const e of events) {
        if (e.kind === FARM_EVENT) latest.set((e.detail as FarmGraph).name, e.detail as FarmGraph);
        else if (e.kind === FARM_REMOVED) latest.set((e.detail as { name: string }).name, undefined);
      }
      for (const g of latest.values()) {
        if (g === undefined) continue;
        try {
          await apply(g, true);
        } catch (e) {
          log.warn({ farm: g.name, err: String(e) }, 'farm: could not restore');
        }
      }
    },
    async settled() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
    close() {
      for (const f of farms.values()) for (const t of f.timers) clearInterval(t);
      agent.destroy();
    },
  };
}
