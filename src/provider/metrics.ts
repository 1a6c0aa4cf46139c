// The provider's Prometheus metrics, on a registry of its own (several providers in one
// process, as in tests, do not collide). Per-message updates go through cached label
// children, so the message path pays a map lookup and an increment, not a label hash.
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from 'prom-client';
import type { DeployerMetrics } from './deployer.ts';
import type { ActivationPath } from './activation/index.ts';

export interface ProviderMetricsSources {
  queues(): Array<{ service: string; queued: number }>;
  endpoints(): Array<{ service: string; count: number }>;
  hosts(): Array<{ state: string }>;
  inFlight(): number;
}

export interface ProviderMetrics extends DeployerMetrics {
  activation(service: string, path: ActivationPath): void;
  message(service: string, operation: string, status: number, seconds: number): void;
  render(): Promise<{ contentType: string; body: string }>;
}

export function createProviderMetrics(sources: ProviderMetricsSources): ProviderMetrics {
  const register = new PromRegistry();
  collectDefaultMetrics({ register, prefix: 'shoal_provider_' });
  const messages = new Counter({
    name: 'shoal_provider_messages_total',
    help: 'Messages answered, by service, operation and HTTP status',
    labelNames: ['service', 'operation', 'status'] as const,
    registers: [register],
  });
  const latency = new Histogram({
    name: 'shoal_provider_message_duration_seconds',
    help: 'Time from a message arriving to its reply being passed on (cold starts included)',
    labelNames: ['service'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [register],
  });
  const coldStarts = new Counter({
    name: 'shoal_provider_cold_starts_total',
    help: 'Deployments started because a message found no ready instance',
    labelNames: ['service'] as const,
    registers: [register],
  });
  const activations = new Counter({
    name: 'shoal_activations_total',
    help: 'Messages that found no warm instance, by the path that answered them (resume, restore, fork, cold)',
    labelNames: ['service', 'path'] as const,
    registers: [register],
  });
  const deploys = new Histogram({
    name: 'shoal_provider_deploy_duration_seconds',
    help: 'Time from sending a deployment plan to its host until the answer, by outcome',
    labelNames: ['service', 'outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
    registers: [register],
  });
  new Gauge({
    name: 'shoal_provider_queue_depth',
    help: 'Messages waiting in the activator for an instance, by service',
    labelNames: ['service'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const q of sources.queues()) this.set({ service: q.service }, q.queued);
    },
  });
  new Gauge({
    name: 'shoal_provider_endpoints',
    help: 'Ready instances in the routing set, by service',
    labelNames: ['service'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const e of sources.endpoints()) this.set({ service: e.service }, e.count);
    },
  });
  new Gauge({
    name: 'shoal_provider_hosts',
    help: 'Registered hosts by state',
    labelNames: ['state'] as const,
    registers: [register],
    collect() {
      this.reset();
      const counts: Record<string, number> = { alive: 0, suspect: 0, dead: 0 };
      for (const h of sources.hosts()) counts[h.state] = (counts[h.state] ?? 0) + 1;
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'shoal_provider_in_flight',
    help: 'Messages forwarded and not yet answered',
    registers: [register],
    collect() {
      this.set(sources.inFlight());
    },
  });

  const counterCells = new Map<string, { inc(): void }>();
  const latencyCells = new Map<string, { observe(v: number): void }>();
  return {
    message(service, operation, status, seconds) {
      const key = `${service}\u0000${operation}\u0000${status}`;
      let c = counterCells.get(key);
      if (c === undefined) {
        c = messages.labels(service, operation, String(status));
        counterCells.set(key, c);
      }
      c.inc();
      let h = latencyCells.get(service);
      if (h === undefined) {
        h = latency.labels(service);
        latencyCells.set(service, h);
      }
      h.observe(seconds);
    },
    coldStart: (service) => coldStarts.labels(service).inc(),
    activation: (service, path) => activations.labels(service, path).inc(),
    deployment: (service, outcome, seconds) => deploys.labels(service, outcome).observe(seconds),
    async render() {
      return { contentType: register.contentType, body: await register.metrics() };
    },
  };
}
