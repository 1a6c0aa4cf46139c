// Prometheus metrics of one host. Each host gets its own registry (tests run several
// hosts in one process); gauges read the live state when scraped.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { HostEvent } from '../protocol/index.ts';

export interface MetricsSnapshot {
  instances: number;
  reservedMemoryMb: number;
  reservedCpuMillis: number;
  capacityMemoryMb: number;
  capacityCpuMillis: number;
  capacityInstances: number;
  layerCacheBytes: number;
  layerCacheEntries: number;
  inFlight: number;
}

export interface HostMetrics {
  readonly registry: Registry;
  deployment(result: 'ok' | 'refused' | 'invalid' | 'failed', durationMs?: number): void;
  phase(name: string, durationMs: number): void;
  pulled(bytes: number, layers: number): void;
  event(event: HostEvent): void;
  render(): Promise<{ contentType: string; body: string }>;
}

export function createHostMetrics(snapshot: () => MetricsSnapshot): HostMetrics {
  const registry = new Registry();
  const deployments = new Counter({
    name: 'shoal_host_deployments_total',
    help: 'Deployment requests by result',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const deployDuration = new Histogram({
    name: 'shoal_host_deploy_duration_seconds',
    help: 'Plan received to instance ready',
    buckets: [0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const phaseDuration = new Histogram({
    name: 'shoal_host_deploy_phase_seconds',
    help: 'Duration of each deployment phase',
    labelNames: ['phase'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    registers: [registry],
  });
  const pulledBytes = new Counter({ name: 'shoal_host_pulled_bytes_total', help: 'Layer bytes pulled from stores', registers: [registry] });
  const pulledLayers = new Counter({ name: 'shoal_host_pulled_layers_total', help: 'Layers pulled from stores', registers: [registry] });
  const events = new Counter({
    name: 'shoal_host_instance_events_total',
    help: 'Instance events by type',
    labelNames: ['type'] as const,
    registers: [registry],
  });
  const gauge = (name: string, help: string, read: (s: MetricsSnapshot) => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(snapshot()));
      },
    });
  };
  gauge('shoal_host_instances', 'Live instances', (s) => s.instances);
  gauge('shoal_host_reserved_memory_mb', 'Memory reserved by admitted instances', (s) => s.reservedMemoryMb);
  gauge('shoal_host_reserved_cpu_millis', 'CPU reserved by admitted instances', (s) => s.reservedCpuMillis);
  gauge('shoal_host_capacity_memory_mb', 'Memory capacity', (s) => s.capacityMemoryMb);
  gauge('shoal_host_capacity_cpu_millis', 'CPU capacity', (s) => s.capacityCpuMillis);
  gauge('shoal_host_capacity_instances', 'Instance capacity', (s) => s.capacityInstances);
  gauge('shoal_host_layer_cache_bytes', 'Bytes of unpacked layers in the cache', (s) => s.layerCacheBytes);
  gauge('shoal_host_layer_cache_entries', 'Entries in the layer cache', (s) => s.layerCacheEntries);
  gauge('shoal_host_forward_in_flight', 'Requests being forwarded now', (s) => s.inFlight);

  return {
    registry,
    deployment(result, durationMs) {
      deployments.inc({ result });
      if (durationMs !== undefined) deployDuration.observe(durationMs / 1000);
    },
    phase(name, durationMs) {
      phaseDuration.observe({ phase: name }, durationMs / 1000);
    },
    pulled(bytes, layers) {
      pulledBytes.inc(bytes);
      pulledLayers.inc(layers);
    },
    event(event) {
      events.inc({ type: event.type });
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
