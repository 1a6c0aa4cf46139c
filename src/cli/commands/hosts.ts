import type { Command } from 'commander';
import type { HostSummary } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { ago, providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

export function registerHostsCommand(program: Command): void {
  withProviderOptions(program.command('hosts').description("the provider's hosts: state, load, free capacity")).action(async (opts: ClientOptions) => {
    const r = await providerRequest<{ hosts: HostSummary[] }>(opts, 'GET', '/api/v1/hosts');
    printResult(opts, r, () => {
      if (r.hosts.length === 0) return 'no hosts registered (shoal host --provider URL --join-token TOKEN)';
      const now = Date.now();
      return table(
        ['HOST', 'STATE', 'INSTANCES', 'IN FLIGHT', 'FREE MEMORY', 'FREE CPU', 'LAYERS', 'DRIVERS', 'LAST REPORT', 'CONTROL'],
        r.hosts.map((h) => {
          const rep = h.report;
          return [
            h.id,
            h.state,
            rep ? `${rep.load.instances}/${rep.capacity.instances}` : '-',
            rep ? String(rep.load.inFlight) : '-',
            rep ? `${rep.free.memoryMb}/${rep.capacity.memoryMb} MiB` : '-',
            rep ? `${rep.free.cpuMillis}/${rep.capacity.cpuMillis} m` : '-',
            rep ? String(rep.layers.length) : '-',
            rep ? rep.drivers.map((d) => `${d.name}${d.default ? '*' : ''}`).join(',') : '-',
            ago(h.lastSeen, now),
            h.controlUrl,
          ];
        }),
      );
    });
  });
}
