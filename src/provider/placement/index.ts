// Placement: which host gets a new instance of a service. Each policy is a small pure
// function of (request, host views, rand) → decision, so a unit test can drive it with
// made-up reports. A shared feasibility filter runs first for every policy and gives
// each refused host a reason (Nomad's scheduler/feasible in small). Hosts are judged by
// their drivers' declared capabilities, never by a driver's name. No I/O, no clocks.
import type { DriverCapabilities, Isolation } from '../../protocol/index.ts';
import { ShoalError } from '../../protocol/index.ts';

export type { DriverCapabilities, Isolation };

export type HostState = 'alive' | 'suspect' | 'dead';

export interface Amounts {
  memoryMb: number;
  cpuMillis: number;
  instances: number;
}

/** One driver a host offers, as its reports describe it. */
export interface HostDriverView {
  /** Opaque key the plan uses to ask for this driver; placement only passes it through. */
  key: string;
  /** The driver a plan gets when it names none. */
  isDefault: boolean;
  /** From the host's fingerprint: can it run instances now? */
  healthy: boolean;
  capabilities: DriverCapabilities;
}

/** What placement knows of one host: its latest report, seen from the service being placed. */
export interface HostView {
  id: string;
  state: HostState;
  labels: Readonly<Record<string, string>>;
  capacity: Amounts;
  free: Amounts;
  load: { instances: number; inFlight: number };
  /** Digests of the image layers the host has cached. */
  cachedLayers: ReadonlySet<string>;
  drivers: readonly HostDriverView[];
  /** Instances of the service being placed already on this host (running or starting). */
  replicas: number;
}

export type PlacementPolicy = 'least-loaded' | 'cache-affinity' | 'host-list' | 'spread';

export const placementPolicies: readonly PlacementPolicy[] = ['least-loaded', 'cache-affinity', 'host-list', 'spread'];

/** The policy a service gets when its description names none and lists no hosts. */
export const defaultPlacementPolicy: PlacementPolicy = 'least-loaded';

/** The policy `place` uses: the spec's, else host-list when it names hosts, else least-loaded. */
export function effectivePolicy(spec: PlacementSpec): PlacementPolicy {
  if (spec.policy !== undefined) return spec.policy;
  return spec.hosts !== undefined && spec.hosts.length > 0 ? 'host-list' : defaultPlacementPolicy;
}

/** Capabilities a service needs: each `true` flag is required; `isolation` is the acceptable mode(s). */
export interface RequiredCapabilities {
  isolation?: Isolation | readonly Isolation[];
  canPause?: boolean;
  canSnapshot?: boolean;
  canMigrate?: boolean;
  canClone?: boolean;
  enforcesLimits?: boolean;
  /** Runs programs listening on TCP $PORT (a service's `listen`). */
  servesPort?: boolean;
}

export interface PlacementSpec {
  policy?: PlacementPolicy;
  /** Only these hosts; with policy 'host-list' also the order of preference. */
  hosts?: readonly string[];
  /** Every label must be on the host with the same value. */
  labels?: Readonly<Record<string, string>>;
  capabilities?: RequiredCapabilities;
}

export interface PlacementRequest {
  service: string;
  resources: { memoryMb: number; cpuMillis: number };
  /** The image's layers (for cache affinity). */
  layers: ReadonlyArray<{ digest: string; size: number }>;
  placement: PlacementSpec;
  /** Hosts not to use (earlier attempts failed there). */
  exclude?: readonly string[];
}

export type PlacementDecision =
  | {
      ok: true;
      host: string;
      /** Key of the host driver to name in the plan (the one that meets the required capabilities). */
      driver: string;
      /** How good the chosen host is under the policy, 0..1 (higher is better). */
      score: number;
      reason: string;
      /** The hosts the feasibility filter refused, with why. */
      rejected: Record<string, string>;
    }
  | {
      ok: false;
      code: 'no-host';
      /** Why each host was refused, by host id. */
      reasons: Record<string, string>;
      /** One line for the 503 that the waiting messages get. */
      message: string;
    };

/** A placement policy: pure; `rand` (returning [0, 1)) breaks exact ties when given, else host id order. */
export type Placer = (request: PlacementRequest, hosts: readonly HostView[], rand?: () => number) => PlacementDecision;

export interface Candidate {
  host: HostView;
  driver: string;
}

export interface Feasibility {
  candidates: Candidate[];
  rejected: Record<string, string>;
}

const REQUIRED_FLAGS = ['canPause', 'canSnapshot', 'canMigrate', 'canClone', 'enforcesLimits', 'servesPort'] as const;

/** What `capabilities` lacks of `required` (empty when it satisfies them). */
export function missingCapabilities(capabilities: DriverCapabilities, required: RequiredCapabilities | undefined): string[] {
  if (required === undefined) return [];
  const missing: string[] = [];
  const modes: readonly Isolation[] = typeof required.isolation === 'string' ? [required.isolation] : (required.isolation ?? []);
  if (modes.length > 0 && !modes.includes(capabilities.isolation)) missing.push(`isolation ${modes.join('|')}`);
  for (const flag of REQUIRED_FLAGS) if (required[flag] === true && !capabilities[flag]) missing.push(flag);
  return missing;
}

function refusal(host: HostView, request: PlacementRequest): string | Candidate {
  const spec = request.placement;
  if (request.exclude?.includes(host.id)) return 'excluded: an earlier attempt failed here';
  if (host.state !== 'alive') return host.state === 'suspect' ? 'suspect: missed its recent reports' : 'dead';
  if (spec.hosts !== undefined && spec.hosts.length > 0 && !spec.hosts.includes(host.id)) return 'not in the placement host list';
  for (const [k, v] of Object.entries(spec.labels ?? {})) {
    const has = host.labels[k];
    if (has === undefined) return `label ${k}=${v} wanted, host has no ${k}`;
    if (has !== v) return `label ${k}=${v} wanted, host has ${k}=${has}`;
  }
  const { memoryMb, cpuMillis } = request.resources;
  if (host.free.instances < 1) return `no instance slot free (${host.capacity.instances} max)`;
  if (host.free.memoryMb < memoryMb) return `needs ${memoryMb} MB memory, ${host.free.memoryMb} MB free`;
  if (host.free.cpuMillis < cpuMillis) return `needs ${cpuMillis} CPU millis, ${host.free.cpuMillis} free`;
  const healthy = host.drivers.filter((d) => d.healthy);
  if (healthy.length === 0) return host.drivers.length === 0 ? 'reports no driver' : 'no healthy driver';
  const fitting = healthy.filter((d) => missingCapabilities(d.capabilities, spec.capabilities).length === 0);
  const chosen = fitting.find((d) => d.isDefault) ?? fitting[0];
  if (chosen === undefined) {
    // Name what the closest driver lacks, so the operator sees what to change.
    const gaps = healthy.map((d) => missingCapabilities(d.capabilities, spec.capabilities)).sort((a, b) => a.length - b.length)[0] ?? [];
    return `no healthy driver with ${gaps.join(', ')}`;
  }
  return { host, driver: chosen.key };
}

/**
 * The shared filter: alive, not excluded, in the host list (when one is given), labels
 * match, enough free memory, CPU and instance slots, and a healthy driver with the
 * required capabilities. Every refused host (and every listed host with no report) gets a reason.
 */
export function feasibleHosts(request: PlacementRequest, hosts: readonly HostView[]): Feasibility {
  const candidates: Candidate[] = [];
  const rejected: Record<string, string> = {};
  for (const host of hosts) {
    const r = refusal(host, request);
    if (typeof r === 'string') rejected[host.id] = r;
    else candidates.push(r);
  }
  const known = new Set(hosts.map((h) => h.id));
  for (const id of request.placement.hosts ?? []) if (!known.has(id)) rejected[id] = 'unknown host: no report from it';
  return { candidates, rejected };
}

/** Smallest share of capacity left free after placing the request (memory, CPU, instance slots), 0..1. */
export function freeShareAfter(host: HostView, request: PlacementRequest): number {
  const share = (free: number, need: number, capacity: number) => (capacity > 0 ? Math.max(0, free - need) / capacity : 0);
  return Math.min(
    share(host.free.memoryMb, request.resources.memoryMb, host.capacity.memoryMb),
    share(host.free.cpuMillis, request.resources.cpuMillis, host.capacity.cpuMillis),
    share(host.free.instances, 1, host.capacity.instances),
  );
}

type Compare = (a: Candidate, b: Candidate) => number;

// Free share is compared to the percent: two hosts 0.3% apart are equally free, and
// then the live load (in-flight requests, instances) decides.
const percent = (x: number) => Math.round(x * 100);
const byLoad =
  (request: PlacementRequest): Compare =>
  (a, b) =>
    percent(freeShareAfter(b.host, request)) - percent(freeShareAfter(a.host, request)) ||
    a.host.load.inFlight - b.host.load.inFlight ||
    a.host.load.instances - b.host.load.instances;

/** The best candidate under `compare`; exact ties go to `rand` when given, else to the lowest host id. */
function best(candidates: readonly Candidate[], compare: Compare, rand: (() => number) | undefined): Candidate | undefined {
  const sorted = [...candidates].sort((a, b) => compare(a, b) || (a.host.id < b.host.id ? -1 : a.host.id > b.host.id ? 1 : 0));
  const first = sorted[0];
  if (first === undefined || rand === undefined) return first;
  const tied = sorted.filter((c) => compare(c, first) === 0);
  return tied[Math.min(tied.length - 1, Math.floor(rand() * tied.length))];
}

function noHost(request: PlacementRequest, hosts: readonly HostView[], rejected: Record<string, string>): PlacementDecision {
  const list = Object.entries(rejected).map(([id, why]) => `${id}: ${why}`);
  const message =
    hosts.length === 0 && list.length === 0
      ? `no host can run '${request.service}': no host has reported`
      : `no host can run '${request.service}': ${list.join('; ')}`;
  return { ok: false, code: 'no-host', reasons: rejected, message };
}

const round = (x: number) => Math.round(x * 1000) / 1000;
const mb = (bytes: number) => `${Math.round(bytes / 1e5) / 10} MB`;

/** The host with the most capacity left after placing; then fewest in-flight requests, then fewest instances. */
export const leastLoaded: Placer = (request, hosts, rand) => {
  const { candidates, rejected } = feasibleHosts(request, hosts);
  const chosen = best(candidates, byLoad(request), rand);
  if (chosen === undefined) return noHost(request, hosts, rejected);
  const free = freeShareAfter(chosen.host, request);
  return {
    ok: true,
    host: chosen.host.id,
    driver: chosen.driver,
    score: round(free),
    reason: `least loaded: ${percent(free)}% free after placing, ${chosen.host.load.inFlight} in flight`,
    rejected,
  };
};

/** Bytes of the request's layers cached on `host`. */
export function cachedBytes(host: HostView, request: PlacementRequest): number {
  let n = 0;
  for (const l of request.layers) if (host.cachedLayers.has(l.digest)) n += l.size;
  return n;
}

/** The host that already holds the most bytes of the image's layers; ties → least loaded. */
export const cacheAffinity: Placer = (request, hosts, rand) => {
  const { candidates, rejected } = feasibleHosts(request, hosts);
  const load = byLoad(request);
  const chosen = best(candidates, (a, b) => cachedBytes(b.host, request) - cachedBytes(a.host, request) || load(a, b), rand);
  if (chosen === undefined) return noHost(request, hosts, rejected);
  const total = request.layers.reduce((n, l) => n + l.size, 0);
  const cached = cachedBytes(chosen.host, request);
  return {
    ok: true,
    host: chosen.host.id,
    driver: chosen.driver,
    score: total > 0 ? round(cached / total) : 0,
    reason: `cache affinity: ${mb(cached)} of ${mb(total)} of the image cached here`,
    rejected,
  };
};

/** The first feasible host of the placement's host list, in the list's order. */
export const hostList: Placer = (request, hosts) => {
  const list = request.placement.hosts ?? [];
  if (list.length === 0) {
    const rejected = Object.fromEntries(hosts.map((h) => [h.id, "policy 'host-list' but the placement names no hosts"]));
    return noHost(request, hosts, rejected);
  }
  const { candidates, rejected } = feasibleHosts(request, hosts);
  for (const [i, id] of list.entries()) {
    const c = candidates.find((x) => x.host.id === id);
    if (c === undefined) continue;
    return {
      ok: true,
      host: id,
      driver: c.driver,
      score: round(1 / (1 + i)),
      reason: i === 0 ? `host list: first choice` : `host list: choice ${i + 1} of ${list.length} (earlier ones refused)`,
      rejected,
    };
  }
  return noHost(request, hosts, rejected);
};

/** The host with the fewest replicas of this service; ties → least loaded. */
export const spread: Placer = (request, hosts, rand) => {
  const { candidates, rejected } = feasibleHosts(request, hosts);
  const load = byLoad(request);
  const chosen = best(candidates, (a, b) => a.host.replicas - b.host.replicas || load(a, b), rand);
  if (chosen === undefined) return noHost(request, hosts, rejected);
  return {
    ok: true,
    host: chosen.host.id,
    driver: chosen.driver,
    score: round(1 / (1 + chosen.host.replicas)),
    reason: `spread: ${chosen.host.replicas} replica(s) of ${request.service} here already`,
    rejected,
  };
};

/** Place with the request's policy (see effectivePolicy for the default). */
export function place(request: PlacementRequest, hosts: readonly HostView[], rand?: () => number): PlacementDecision {
  const policy = effectivePolicy(request.placement);
  switch (policy) {
    case 'least-loaded':
      return leastLoaded(request, hosts, rand);
    case 'cache-affinity':
      return cacheAffinity(request, hosts, rand);
    case 'host-list':
      return hostList(request, hosts, rand);
    case 'spread':
      return spread(request, hosts, rand);
    default: {
      const unknown: never = policy;
      // Only reachable from untyped input: the registry validates descriptions.
      throw new ShoalError('invalid', `unknown placement policy '${String(unknown)}'`, { field: 'placement.policy' });
    }
  }
}
