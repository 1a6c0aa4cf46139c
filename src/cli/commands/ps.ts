import type { Command } from 'commander';
import type { InstanceSummary } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { ago, providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

export function registerPsCommand(program: Command): void {
  withProviderOptions(program.command('ps').description('instances on every host of the provider')).action(async (opts: ClientOptions) => {
    const r = await providerRequest<{ instances: InstanceSummary[]; unreachable: string[] }>(opts, 'GET', '/api/v1/instances');
    printResult(opts, r, () => {
      const now = Date.now();
      const lines =
        r.instances.length === 0
          ? ['no instances (services deploy on their first message)']
          : [
              table(
                ['INSTANCE', 'SERVICE', 'VERSION', 'HOST', 'STATE', 'DRIVER', 'ROUTED', 'IN FLIGHT', 'MEMORY', 'CREATED'],
                r.instances.map((i) => [i.id, i.service, i.version, i.hostId, i.state, i.driver, i.routable ? 'yes' : 'no', String(i.inFlight), `${i.memoryMb} MiB`, ago(i.createdAt, now)]),
              ),
            ];
      if (r.unreachable.length > 0) lines.push(`unreachable hosts: ${r.unreachable.join(', ')}`);
      return lines.join('\n');
    });
  });
}
