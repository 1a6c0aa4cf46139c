// What a host tells about itself: the report its provider reads (capacity, load, cached
// layers, drivers) and the snapshot its metrics gauges read when scraped.
import type { Admission } from './admission.ts';
import type { Agent } from './agent.ts';
import type { LayerCache } from './layer-cache.ts';
import type { MetricsSnapshot } from './metrics.ts';
import type { DriverSet, FingerprintCache } from './host-drivers.ts';
import type { HostReport } from '../protocol/index.ts';
import type { DriverName } from './drivers/index.ts';

export interface HostFacts {
  hostId: string;
  /** Known once both servers listen. */
  urls(): { controlUrl: string; dataUrl: string };
  admission: Pick<Admission, 'capacity' | 'reserved' | 'free'>;
  agent: Pick<Agent, 'liveCount' | 'warm'>;
  load(): { inFlight: number; requestsTotal: number };
  layerCache: Pick<LayerCache, 'entries' | 'totalBytes' | 'budgetBytes'>;
  drivers: DriverSet;
  defaultDriver: DriverName;
  fingerprints: FingerprintCache;
}

export async function hostReport(f: HostFacts): Promise<HostReport> {
  return {
    hostId: f.hostId,
    ...f.urls(),
    at: Date.now(),
    capacity: { ...f.admission.capacity },
    reserved: f.admission.reserved(),
    free: f.admission.free(),
    load: { instances: f.agent.liveCount(), ...f.load() },
    layers: f.layerCache
      .entries()
      .filter((e) => e.kind !== 'flat')
      .map((e) => ({ digest: e.digest, size: e.size, inUse: e.refs > 0 })),
    layerCache: { bytes: f.layerCache.totalBytes(), budgetBytes: f.layerCache.budgetBytes },
    warm: f.agent.warm(),
    drivers: await Promise.all(
      Object.values(f.drivers).map(async (d) => ({
        name: d.name,
        default: d.name === f.defaultDriver,
        capabilities: { ...d.capabilities },
        fingerprint: { ...(await f.fingerprints.get(d)) },
      })),
    ),
  };
}

export function metricsSnapshot(f: Pick<HostFacts, 'admission' | 'agent' | 'load' | 'layerCache'>): MetricsSnapshot {
  const r = f.admission.reserved();
  return {
    instances: f.agent.liveCount(),
    reservedMemoryMb: r.memoryMb,
    reservedCpuMillis: r.cpuMillis,
    capacityMemoryMb: f.admission.capacity.memoryMb,
    capacityCpuMillis: f.admission.capacity.cpuMillis,
    capacityInstances: f.admission.capacity.instances,
    layerCacheBytes: f.layerCache.totalBytes(),
    layerCacheEntries: f.layerCache.entries().length,
    inFlight: f.load().inFlight,
  };
}
