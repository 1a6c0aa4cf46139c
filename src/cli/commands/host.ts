import type { Command } from 'commander';
import { totalmem, availableParallelism } from 'node:os';
import { ShoalError } from '../../protocol/errors.ts';
import { parseListen, untilSignal } from './common.ts';

function positiveInt(text: string, field: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new ShoalError('invalid', `--${field} must be a positive integer, got ${JSON.stringify(text)}`, { field });
  return n;
}

/** Default capacity: three quarters of this machine. */
export function defaultCapacity() {
  return {
    memoryMb: Math.floor((totalmem() / 1024 / 1024) * 0.75),
    cpuMillis: availableParallelism() * 1000,
    instances: 64,
  };
}

export function registerHostCommand(program: Command): void {
  program
    .command('host')
    .description('run a host agent: admits deployments, pulls layers, runs instances isolated, forwards messages')
    .option('--listen <host:port>', 'control API address', '127.0.0.1:7080')
    .option('--data-listen <host:port>', 'data-plane (forwarder) address', '127.0.0.1:7081')
    .option('--data <dir>', 'instances, layer cache and the host key', './.shoal/host')
    .option('--token <token>', 'bearer token of the control API (env SHOAL_HOST_TOKEN)')
    .option('--driver <name>', 'runc | process (default: runc when present and root)')
    .option('--memory <mb>', 'memory capacity in MiB')
    .option('--cpu <millis>', 'CPU capacity in millicores')
    .option('--instances <n>', 'most instances at once')
    .option('--layer-cache <mb>', 'budget of the unpacked-layer cache in MiB', '10240')
    .option('--keep-instances', 'on SIGTERM leave instances running for the next start to re-adopt')
    .action(
      async (opts: {
        listen: string;
        dataListen: string;
        data: string;
        token?: string;
        driver?: string;
        memory?: string;
        cpu?: string;
        instances?: string;
        layerCache: string;
        keepInstances?: boolean;
      }) => {
        const token = opts.token ?? process.env.SHOAL_HOST_TOKEN;
        if (!token || token.length < 8) {
          throw new ShoalError('invalid', 'a control token of at least 8 characters is required (--token or SHOAL_HOST_TOKEN)', { field: 'token' });
        }
        if (opts.driver !== undefined && opts.driver !== 'runc' && opts.driver !== 'process') {
          throw new ShoalError('invalid', `--driver must be runc or process, got ${JSON.stringify(opts.driver)}`, { field: 'driver' });
        }
        const d = defaultCapacity();
        const capacity = {
          memoryMb: opts.memory ? positiveInt(opts.memory, 'memory') : d.memoryMb,
          cpuMillis: opts.cpu ? positiveInt(opts.cpu, 'cpu') : d.cpuMillis,
          instances: opts.instances ? positiveInt(opts.instances, 'instances') : d.instances,
        };
        const { startHost } = await import('../../host/index.ts');
        const { createLogger } = await import('../logger.ts');
        const host = await startHost({
          dataDir: opts.data,
          listen: parseListen(opts.listen),
          dataListen: parseListen(opts.dataListen, 'data-listen'),
          token,
          capacity,
          ...(opts.driver ? { driver: opts.driver } : {}),
          layerCacheBytes: positiveInt(opts.layerCache, 'layer-cache') * 1024 * 1024,
          logger: createLogger('host'),
        });
        process.stdout.write(`shoal host ${host.hostId}: control ${host.controlUrl}  data ${host.dataUrl}\n`);
        await untilSignal();
        await host.close({ stopInstances: !opts.keepInstances });
      },
    );
}
