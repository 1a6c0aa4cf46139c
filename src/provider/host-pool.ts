// The provider's view of its hosts: registration (with the provider's join token), the
// latest report of each, their state (alive → suspect → dead when reports stop), each
// host's event stream (instances crashing, exiting, being removed), and a small client
// for each host's control API and data plane.
//
// Reports are pulled, not pushed: every reportIntervalMs the provider GETs each host's
// /v1/report. Why: the host agent needs no provider-side code or credentials (startHost
// is unchanged), the poll doubles as a liveness probe measured from where it matters (can
// the provider reach the host?), and a host that restarts on a new port re-registers
// rather than pushing to a stale address. The cost, one small GET per host per interval
// per provider, is nothing at farm sizes one provider serves. The registry's markHosts
// demotes silent hosts and reports each transition to exactly one provider, so when
// several providers share a database only one of them moves a dead host's instances.
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { DeploymentPlan, DeploymentResult, HostEvent, HostReport, IncomingOffer, InstanceInfo, LiveMigrationResult, MigrationOffer } from '../protocol/index.ts';
import { ShoalError, type ErrorCode } from '../protocol/index.ts';
import type { HostRecord, HostState, Registry } from './registry/index.ts';
import { caOption, createUpstream, localDataPlane, readEventStream, type DataLink as HostLink } from '../http/index.ts';
import { logWriteFailure } from './write-failures.ts';


import type { Logger } from './logger.ts';
export type { Logger } from './logger.ts';

// ---- the client of one host ---------------------------------------------------

export interface HostClient {
  readonly controlUrl: string;
  /** Pooled keep-alive connections to a data-plane address of the host, shared by every endpoint there. */
  dataLink(hostname: string, port: number, protocol?: string): HostLink;
  report(signal?: AbortSignal): Promise<HostReport>;
  deploy(plan: DeploymentPlan, signal?: AbortSignal): Promise<DeploymentResult>;
  list(): Promise<InstanceInfo[]>;
  get(instanceId: string): Promise<InstanceInfo | undefined>;
  /** Stops and removes an instance; true if it was there. */
  remove(instanceId: string): Promise<boolean>;
  /** Captures the instance's state into the store; with hold, its new messages stay held until it is removed or released. */
  snapshot(instanceId: string, options?: { hold?: boolean }): Promise<{ digest: string; size: number }>;
  /** Lets messages held by snapshot({hold}) go on. */
  release(instanceId: string): Promise<void>;
  /** Starts a copy of a running instance on the same host (drivers with canClone); the source keeps serving. */
  fork(instanceId: string): Promise<DeploymentResult>;
  /** Live migration, target: an instance of `plan` waiting for its state; the offer goes to the source. */
  receive(plan: DeploymentPlan): Promise<IncomingOffer>;
  /** Live migration, target: the deployment once the state arrived and it is ready. */
  accept(instanceId: string): Promise<DeploymentResult>;
  /** Live migration, target: give up waiting (the instance is removed). */
  abortIncoming(instanceId: string): Promise<void>;
  /** Live migration, source: send the instance to the offer; its messages stay held until it is removed or resumeMigrated. */
  migrateLive(instanceId: string, offer: MigrationOffer): Promise<LiveMigrationResult>;
  /** Live migration, source: the target failed after the move; run the instance here again. */
  resumeMigrated(instanceId: string): Promise<void>;
  /** Freezes an instance in memory (drivers with canPause); its messages wait until resume. */
  pause(instanceId: string): Promise<InstanceInfo>;
  resume(instanceId: string): Promise<InstanceInfo>;
  /** Discards the host's containers created ahead for a service (removed), or for its versions but keepVersion (superseded). */
  dropWarm(service: string, keepVersion?: string): Promise<number>;
  /** The instance's log: the last `tail` lines, then (follow) what it appends until `signal` aborts. */
  logs(instanceId: string, options: { tail: number; follow: boolean; signal: AbortSignal }): Promise<IncomingMessage>;
  /** Follows the host's event stream, reconnecting until the returned function is called. */
  follow(onEvent: (e: HostEvent) => void, onConnected?: (up: boolean) => void): () => void;
  close(): void;
}

export function createHostClient(options: { controlUrl: string; token: string; timeoutMs?: number; deployTimeoutMs?: number }): HostClient {
  const base = new URL(options.controlUrl);
  // The control link is HTTPS when the host registered an https:// URL, trusting the operator's CA.
  const secure = base.protocol === 'https:';
  const ca = caOption();
  const controlAgent = secure ? new HttpsAgent({ keepAlive: true, maxSockets: 16, ...(ca === undefined ? {} : { ca }) }) : new Agent({ keepAlive: true, maxSockets: 16 });
  const request = secure ? httpsRequest : httpRequest;
  const links = new Map<string, HostLink>();
  const timeoutMs = options.timeoutMs ?? 5000;
  const deployTimeoutMs = options.deployTimeoutMs ?? 10 * 60_000;
  const auth = `Bearer ${options.token}`;
  const streams = new Set<() => void>();

  function call<T>(method: string, path: string, body?: unknown, o: { timeoutMs?: number; signal?: AbortSignal | undefined; allow404?: boolean } = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          agent: controlAgent,
          hostname: base.hostname.replace(/^\[|\]$/g, ''),
          port: base.port,
          method,
          path,
          headers: {
            authorization: auth,
            accept: 'application/json',
            ...(data === undefined ? {} : { 'content-type': 'application/json', 'content-length': data.length }),
          },
          ...(o.signal === undefined ? {} : { signal: o.signal }),
        },
        (res) => {
          readBody(res).then((text) => {
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = text === '' ? undefined : JSON.parse(text);
            } catch {
              json = undefined;
            }
            if (status >= 200 && status < 300) return resolve(json as T);
            if (status === 404 && o.allow404) return resolve(undefined as T);
            const err = (json as { error?: { code?: ErrorCode; message?: string; field?: string; detail?: unknown } } | undefined)?.error;
            const code: ErrorCode = err?.code ?? (status === 401 ? 'unauthorized' : status >= 500 ? 'unavailable' : 'invalid');
            reject(
              new ShoalError(code, `host ${options.controlUrl}: ${method} ${path}: ${err?.message ?? `HTTP ${status}`}`, {
                detail: { status, ...(err?.detail === undefined ? {} : { host: err.detail }) },
                ...(err?.field === undefined ? {} : { field: err.field }),
              }),
            );
          }, reject);
        },
      );
      req.setTimeout(o.timeoutMs ?? timeoutMs, () => req.destroy(new ShoalError('timeout', `host ${options.controlUrl}: ${method} ${path}: no answer within ${o.timeoutMs ?? timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof ShoalError) return reject(e);
        reject(new ShoalError('unavailable', `host ${options.controlUrl} is unreachable: ${e.code ?? e.message}`, { cause: e }));
      });
      req.end(data);
    });
  }

  /** The host's log response as a stream (a followed log has no end to wait for). */
  function openLog(id: string, o: { tail: number; follow: boolean; signal: AbortSignal }): Promise<IncomingMessage> {
    const path = `/v1/instances/${encodeURIComponent(id)}/logs?tail=${o.tail}${o.follow ? '&follow=1' : ''}`;
    return new Promise((resolve, reject) => {
      const req = request(
        { hostname: base.hostname.replace(/^\[|\]$/g, ''), port: base.port, path, headers: { authorization: auth }, signal: o.signal },
        (res) => {
          if (res.statusCode === 200) return resolve(res);
          readBody(res).then((text) => {
            let message = `HTTP ${res.statusCode}`;
            let code: ErrorCode = res.statusCode === 404 ? 'not-found' : 'unavailable';
            try {
              const err = (JSON.parse(text) as { error: { code: ErrorCode; message: string } }).error;
              message = err.message;
              code = err.code;
            } catch {
              // not JSON: the status says enough
            }
            reject(new ShoalError(code, `host ${options.controlUrl}: logs of ${id}: ${message}`));
          }, reject);
        },
      );
      // Only the answer's start is timed: a followed log may stay quiet for long.
      const timer = setTimeout(() => req.destroy(new ShoalError('timeout', `host ${options.controlUrl}: logs of ${id}: no answer within ${timeoutMs} ms`)), timeoutMs);
      req.once('response', () => clearTimeout(timer));
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(e instanceof ShoalError ? e : new ShoalError('unavailable', `host ${options.controlUrl} is unreachable: ${e.code ?? e.message}`, { cause: e }));
      });
      req.end();
    });
  }

  function follow(onEvent: (e: HostEvent) => void, onConnected?: (up: boolean) => void): () => void {
    let stopped = false;
    let lastId: string | undefined;
    let current: AbortController | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let delay = 250;
    const connect = () => {
      if (stopped) return;
      const controller = new AbortController();
      current = controller;
      readEventStream(new URL('/v1/events', base), {
        headers: { authorization: auth },
        lastEventId: lastId,
        signal: controller.signal,
        onOpen() {
          delay = 250;
          onConnected?.(true);
        },
        onEvent(e) {
          lastId = e.id;
          let event: HostEvent;
          try {
            event = JSON.parse(e.data) as HostEvent;
          } catch {
            // A malformed event is skipped; the periodic reconcile catches up.
            return;
          }
          onEvent(event); // outside the try: a failing handler is not a malformed event (the pool logs it)
        },
      })
        .catch(() => undefined) // a lost stream is followed again below; the host's liveness is the poll's to judge
        .finally(() => {
          if (current !== controller) return;
          current = undefined;
          onConnected?.(false);
          if (stopped) return;
          timer = setTimeout(connect, delay);
          timer.unref();
          delay = Math.min(delay * 2, 5000);
        });
    };
    connect();
    const stop = () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      current?.abort();
      current = undefined;
      streams.delete(stop);
    };
    streams.add(stop);
    return stop;
  }

  return {
    controlUrl: options.controlUrl,
    dataLink(hostname, port, protocol = 'http:') {
      const key = `${protocol}//${hostname.includes(':') ? `[${hostname}]` : hostname}:${port}`;
      // A host in this very process: its forwarder is called directly (src/http/local-link.ts).
      const local = localDataPlane(key);
      if (local !== undefined) return local;
      let link = links.get(key);
      if (link === undefined) {
        // The router gives each request its own timeout; 256 idle connections cover a busy host.
        link = createUpstream({ origin: `${protocol === 'https:' ? 'https' : 'http'}://${hostname.includes(':') ? `[${hostname}]` : hostname}:${port}`, timeoutMs: 60_000, maxIdle: 256 });
        links.set(key, link);
      }
      return link;
    },
    report: (signal) => call<HostReport>('GET', '/v1/report', undefined, { signal }),
    deploy: (plan, signal) => call<DeploymentResult>('POST', '/v1/instances', plan, { timeoutMs: deployTimeoutMs, signal }),
    list: async () => (await call<{ instances: InstanceInfo[] }>('GET', '/v1/instances')).instances,
    get: (id) => call<InstanceInfo | undefined>('GET', `/v1/instances/${encodeURIComponent(id)}`, undefined, { allow404: true }),
    remove: async (id) => (await call<{ removed: boolean } | undefined>('DELETE', `/v1/instances/${encodeURIComponent(id)}`, undefined, { allow404: true, timeoutMs: 30_000 })) !== undefined,
    snapshot: (id, o = {}) => call<{ digest: string; size: number }>('POST', `/v1/instances/${encodeURIComponent(id)}/snapshot${o.hold ? '?hold=1' : ''}`, undefined, { timeoutMs: 60_000 }),
    release: async (id) => {
      await call<unknown>('POST', `/v1/instances/${encodeURIComponent(id)}/release`);
    },
    fork: (id) => call<DeploymentResult>('POST', `/v1/instances/${encodeURIComponent(id)}/fork`, undefined, { timeoutMs: 60_000 }),
    receive: (plan) => call<IncomingOffer>('POST', '/v1/incoming', plan, { timeoutMs: deployTimeoutMs }),
    accept: (id) => call<DeploymentResult>('POST', `/v1/incoming/${encodeURIComponent(id)}/accept`, undefined, { timeoutMs: deployTimeoutMs }),
    abortIncoming: async (id) => {
      await call<unknown>('DELETE', `/v1/incoming/${encodeURIComponent(id)}`, undefined, { allow404: true, timeoutMs: 30_000 });
    },
    migrateLive: (id, offer) => call<LiveMigrationResult>('POST', `/v1/instances/${encodeURIComponent(id)}/migrate`, offer, { timeoutMs: 10 * 60_000 }),
    resumeMigrated: async (id) => {
      await call<unknown>('POST', `/v1/instances/${encodeURIComponent(id)}/migrate/resume`, undefined, { timeoutMs: 30_000 });
    },
    pause: (id) => call<InstanceInfo>('POST', `/v1/instances/${encodeURIComponent(id)}/pause`, undefined, { timeoutMs: 30_000 }),
    resume: (id) => call<InstanceInfo>('POST', `/v1/instances/${encodeURIComponent(id)}/resume`, undefined, { timeoutMs: 30_000 }),
    dropWarm: async (service, keepVersion) =>
      (await call<{ dropped: number }>('DELETE', `/v1/warm/${encodeURIComponent(service)}${keepVersion === undefined ? '' : `?keep=${encodeURIComponent(keepVersion)}`}`)).dropped,
    follow,
    logs: (id, o) => openLog(id, o),
    close() {
      for (const stop of [...streams]) stop();
      controlAgent.destroy();
      for (const link of links.values()) link.destroy();
      links.clear();
    },
  };
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => (text += c));
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}

// ---- the pool -----------------------------------------------------------------

/** What placement reads about a host. */
export interface PoolHost {
  readonly id: string;
  state: HostState;
  labels: Record<string, string>;
  controlUrl: string;
  dataUrl: string;
  /** The latest report (undefined until the first one arrives). */
  report: HostReport | undefined;
  client: HostClient;
  /** The event stream is connected. */
  following: boolean;
  /** When a connection to it was last refused (epoch ms); cleared by its next report. Not placeable meanwhile. */
  unreachableAt?: number | undefined;
}

export interface HostRegistrationRequest {
  controlUrl: string;
  /** The host's control-API bearer token (kept in the registry so a restarted provider can reach it). */
  token: string;
  labels?: Record<string, string>;
}

export interface HostPoolOptions {
  registry: Registry;
  log: Logger;
  reportIntervalMs?: number;
  suspectAfterMs?: number;
  deadAfterMs?: number;
  /** An instance event from a host's stream. */
  onEvent?(host: PoolHost, event: HostEvent): void;
  /**
   * A host changed state (alive/suspect/dead). `decidedHere`: this provider made the
   * transition (its markHosts call, its poll); false when another provider's was seen.
   */
  onState?(host: PoolHost, from: HostState, to: HostState, decidedHere: boolean): void;
  /** A host was registered (or re-registered) through this provider. */
  onRegistered?(host: PoolHost): void;
}

export interface HostPool {
  register(request: HostRegistrationRequest): Promise<PoolHost>;
  /** Loads the registered hosts from the registry (on start), and follows them. */
  load(): Promise<void>;
  get(id: string): PoolHost | undefined;
  list(): PoolHost[];
  /** Alive hosts with a report, none refusing connections just now: what placement may choose from. */
  placeable(): PoolHost[];
  /**
   * A connection to the host was refused (by its data plane or its control API): it is
   * not placed on until it answers a report again, which is asked for now. Its death is
   * still the registry's verdict (markHosts); this only keeps new instances off it.
   */
  unreachable(id: string): void;
  /** Polls every host once and demotes silent ones (what the timer does). */
  tick(): Promise<void>;
  remove(id: string): Promise<boolean>;
  start(): void;
  close(): Promise<void>;
}

/** A host record as the API shows it: without its token. */
export function publicHost(record: HostRecord): HostRecord {
  return { ...record, controlToken: undefined };
}

export function createHostPool(options: HostPoolOptions): HostPool {
  const { registry, log } = options;
  const interval = options.reportIntervalMs ?? 2000;
  const suspectAfterMs = options.suspectAfterMs ?? interval * 3;
  const deadAfterMs = options.deadAfterMs ?? Math.max(suspectAfterMs, interval * 8);
  const hosts = new Map<string, PoolHost & { stopFollow: () => void; polling: boolean }>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  let ticking: Promise<void> | undefined;

  function adopt(record: HostRecord, token: string, report: HostReport | undefined): PoolHost {
    const existing = hosts.get(record.id);
    if (existing !== undefined && existing.controlUrl === record.controlUrl && record.controlToken === token) {
      existing.state = record.state;
      existing.labels = record.labels;
      existing.dataUrl = record.dataUrl;
      if (report) existing.report = report;
      return existing;
    }
    if (existing !== undefined) {
      existing.stopFollow();
      existing.client.close();
    }
    const client = createHostClient({ controlUrl: record.controlUrl, token });
    const host: PoolHost & { stopFollow: () => void; polling: boolean } = {
      id: record.id,
      state: record.state,
      labels: record.labels,
      controlUrl: record.controlUrl,
      dataUrl: record.dataUrl,
      report: report ?? record.lastReport,
      client,
      following: false,
      stopFollow: () => {},
      polling: false,
    };
    host.stopFollow = client.follow(
      (e) => {
        try {
          options.onEvent?.(host, e);
        } catch (err) {
          log.error({ err: String(err), host: host.id }, 'host event handler failed');
        }
      },
      (up) => {
        host.following = up;
      },
    );
    hosts.set(record.id, host);
    return host;
  }

  async function register(req: HostRegistrationRequest): Promise<PoolHost> {
    let controlUrl: string;
    try {
      const u = new URL(req.controlUrl);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
      controlUrl = u.origin;
    } catch {
      throw new ShoalError('invalid', `controlUrl must be an http(s) URL, got ${JSON.stringify(req.controlUrl)}`, { field: 'controlUrl' });
    }
    if (typeof req.token !== 'string' || req.token.length < 8) {
      throw new ShoalError('invalid', 'token must be the host control token (at least 8 characters)', { field: 'token' });
    }
    const probe = createHostClient({ controlUrl, token: req.token });
    let report: HostReport;
    try {
      report = await probe.report();
    } catch (e) {
      const err = e as ShoalError;
      if (err.code === 'unauthorized') throw new ShoalError('forbidden', `the host at ${controlUrl} refused the token given for it`, { field: 'token' });
      throw new ShoalError('unavailable', `cannot reach the host at ${controlUrl} to register it: ${err.message}`, { field: 'controlUrl' });
    } finally {
      probe.close();
    }
    const now = Date.now();
    await registry.upsertHost(
      {
        id: report.hostId,
        controlUrl: report.controlUrl || controlUrl,
        dataUrl: report.dataUrl,
        labels: req.labels ?? {},
        capabilities: { drivers: report.drivers.map((d) => ({ name: d.name, default: d.default, capabilities: d.capabilities })) },
        controlToken: req.token,
      },
      now,
    );
    const { host: record } = await registry.recordHostReport(report.hostId, report, now);
    const host = adopt(record, req.token, report);
    await registry
      .appendEvent({ kind: 'host-registered', hostId: host.id, detail: { controlUrl: host.controlUrl, dataUrl: host.dataUrl } })
      .catch(logWriteFailure(log, 'the host-registered event', { host: host.id }));
    log.info({ host: host.id, controlUrl: host.controlUrl, dataUrl: host.dataUrl }, 'host registered');
    options.onRegistered?.(host);
    return host;
  }

  async function load(): Promise<void> {
    for (const record of await registry.listHosts()) {
      const token = record.controlToken;
      if (token === undefined) {
        log.warn({ host: record.id }, 'registered host has no control token on record; skipped');
        continue;
      }
      adopt(record, token, undefined);
    }
  }

  /** The host's report, or undefined when it is silent (silence is what markHosts counts). */
  async function pollOne(host: PoolHost & { polling: boolean }): Promise<{ host: PoolHost; report: HostReport } | undefined> {
    if (host.polling) return undefined;
    host.polling = true;
    try {
      const report = await host.client.report(AbortSignal.timeout(Math.max(1000, interval)));
      if (report.hostId !== host.id) {
        log.warn({ host: host.id, answered: report.hostId }, 'a different host answers at this address; not counted as a report');
        return undefined;
      }
      host.report = report;
      host.unreachableAt = undefined;
      return { host, report };
    } catch {
      return undefined;
    } finally {
      host.polling = false;
    }
  }

  /** Records a round's reports in one write, then brings back to life the hosts that answered. */
  async function recordRound(polled: ReadonlyArray<{ host: PoolHost; report: HostReport }>): Promise<void> {
    let results: Awaited<ReturnType<Registry['recordHostReports']>>;
    try {
      results = await registry.recordHostReports(
        polled.map((p) => ({ id: p.host.id, report: p.report })),
        Date.now(),
      );
    } catch (e) {
      log.error({ err: String(e), hosts: polled.length }, "recording the hosts' reports failed; trying again next round");
      return;
    }
    results.forEach((r, i) => {
      const host = polled[i]!.host;
      if (r === undefined) return;
      host.dataUrl = r.host.dataUrl;
      if (r.previousState !== 'alive') {
        const before = host.state;
        host.state = 'alive';
        options.onState?.(host, before === 'alive' ? r.previousState : before, 'alive', true);
      } else if (host.state !== 'alive') {
        const before = host.state;
        host.state = 'alive';
        options.onState?.(host, before, 'alive', true);
      }
    });
  }

  async function tick(): Promise<void> {
    if (ticking) return ticking;
    ticking = (async () => {
      const polled = (await Promise.all([...hosts.values()].map(pollOne))).filter((p) => p !== undefined);
      if (closed) return;
      await recordRound(polled);
      if (closed) return;
      const changes = await registry.markHosts(Date.now(), { suspectAfterMs, deadAfterMs }).catch((e: unknown) => {
        log.error({ err: String(e) }, 'marking silent hosts failed');
        return [];
      });
      for (const change of changes) {
        const host = hosts.get(change.host.id);
        if (host === undefined) continue;
        const from = host.state;
        host.state = change.host.state;
        log.warn({ host: host.id, from: change.from, to: change.host.state }, `host ${change.host.state}`);
        await registry
          .appendEvent({ kind: `host-${change.host.state}`, hostId: host.id, detail: { from: change.from } })
          .catch(logWriteFailure(log, `the host-${change.host.state} event`, { host: host.id }));
        options.onState?.(host, from, change.host.state, true);
      }
      // Hosts another provider demoted (or registered) show up in the registry.
      const records = await registry.listHosts().catch((e: unknown) => {
        log.warn({ err: String(e) }, "reading other providers' view of the hosts failed; trying again next round");
        return [];
      });
      for (const record of records) {
        const host = hosts.get(record.id);
        if (host === undefined) {
          const token = record.controlToken;
          if (token !== undefined) adopt(record, token, undefined);
          continue;
        }
        if (host.state !== record.state && record.state !== 'alive') {
          const from = host.state;
          host.state = record.state;
          options.onState?.(host, from, record.state, false);
        }
      }
    })().finally(() => {
      ticking = undefined;
    });
    return ticking;
  }

  return {
    register,
    load,
    get: (id) => hosts.get(id),
    list: () => [...hosts.values()],
    placeable: () => [...hosts.values()].filter((h) => h.state === 'alive' && h.report !== undefined && h.unreachableAt === undefined),
    unreachable(id) {
      const host = hosts.get(id);
      if (host === undefined || closed) return;
      if (host.unreachableAt === undefined) log.warn({ host: id }, 'a host refused a connection: not placing on it until it reports again');
      host.unreachableAt = Date.now();
      void pollOne(host).then((p) => (p === undefined || closed ? undefined : recordRound([p])));
    },
    tick,
    async remove(id) {
      const host = hosts.get(id);
      if (host) {
        host.stopFollow();
        host.client.close();
        hosts.delete(id);
      }
      return registry.removeHost(id);
    },
    start() {
      if (timer || closed) return;
      timer = setInterval(() => void tick(), interval);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      await ticking?.catch((e: unknown) => log.error({ err: String(e) }, 'the last host-report round failed'));
      for (const host of hosts.values()) {
        host.stopFollow();
        host.client.close();
      }
      hosts.clear();
    },
  };
}
