import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ShoalError } from '../../protocol/index.ts';
import type { DeploymentSummary, ServiceSummary, ServiceDescription } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { ago, providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

/** A description from a JSON file, or the default export of a .ts/.js module (TypeBox descriptions included). */
export async function loadDescription(file: string): Promise<unknown> {
  const path = resolve(file);
  const ext = extname(path);
  if (ext === '.ts' || ext === '.mts' || ext === '.js' || ext === '.mjs') {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
    } catch (e) {
      throw new ShoalError('invalid', `cannot load ${file}: ${(e as Error).message}`, { field: 'file' });
    }
    const value = mod.default ?? mod.service ?? mod.description;
    if (value === undefined) throw new ShoalError('invalid', `${file} has no default export (export default the service description)`, { field: 'file' });
    // JSON round trip: TypeBox schemas carry symbols and functions the wire does not.
    return JSON.parse(JSON.stringify(value));
  }
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ShoalError('not-found', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: 'file' });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ShoalError('invalid', `${file} is not JSON: ${(e as Error).message}`, { field: 'file' });
  }
}

export function registerServiceCommands(program: Command): void {
  const service = program.command('service').description('register, list, show and remove services on a provider');

  withProviderOptions(service.command('add <file>').description('register a service (or a new version of it) from a JSON file or a .ts module exporting the description')).action(
    async (file: string, opts: ClientOptions) => {
      const description = await loadDescription(file);
      const r = await providerRequest<{ service: { name: string; version: string; description: ServiceDescription } }>(opts, 'POST', '/api/v1/services', description);
      printResult(opts, r, () => {
        const ops = Object.keys(r.service.description.operations).join(', ');
        return `registered ${r.service.name} ${r.service.version} (operations: ${ops}); it deploys on its first message`;
      });
    },
  );

  withProviderOptions(service.command('ls').description('list services')).action(async (opts: ClientOptions) => {
    const r = await providerRequest<{ services: ServiceSummary[] }>(opts, 'GET', '/api/v1/services');
    printResult(opts, r, () =>
      r.services.length === 0
        ? 'no services (shoal service add FILE)'
        : table(
            ['NAME', 'VERSION', 'READY', 'QUEUED', 'IMAGE', 'OPERATIONS'],
            r.services.map((s) => [s.name, s.version, String(s.ready), String(s.queued), s.image, s.operations.join(', ')]),
          ),
    );
  });

  withProviderOptions(service.command('show <name>').description("a service's description, versions, instances and recent deployments")).action(
    async (name: string, opts: ClientOptions) => {
      const r = await providerRequest<{
        service: { name: string; version: string; description: ServiceDescription; updatedAt: number };
        versions: Array<{ version: string; current: boolean; createdAt: number }>;
        instances: Array<{ id: string; hostId: string; version: string; inFlight: number; readyAt: number }>;
        queued: number;
        deployments: DeploymentSummary[];
      }>(opts, 'GET', `/api/v1/services/${encodeURIComponent(name)}`);
      printResult(opts, r, () => {
        const d = r.service.description;
        const lines = [
          `${d.name} ${d.version}${d.description ? ` — ${d.description}` : ''}`,
          `  image      ${d.image}${d.driver ? ` (driver ${d.driver})` : ''}`,
          `  resources  ${d.resources.memoryMb} MiB, ${d.resources.cpuMillis} mCPU, ${d.resources.pids} pids`,
          `  scaling    min ${d.scaling.min}, max ${d.scaling.max}, ${d.scaling.targetConcurrency} in flight per instance, idle ${d.scaling.idleTimeoutMs / 1000} s → ${d.scaling.min}`,
          `  placement  ${d.placement.policy ?? (d.placement.hosts ? 'host-list' : 'least-loaded')}${d.placement.hosts ? ` on ${d.placement.hosts.join(', ')}` : ''}${d.placement.labels ? ` labels ${JSON.stringify(d.placement.labels)}` : ''}`,
          `  versions   ${r.versions.map((v) => `${v.version}${v.current ? ' (current)' : ''}`).join(', ')}`,
          '  operations',
          ...Object.entries(d.operations).map(([op, spec]) => `    ${op}${spec.idempotent ? ' (idempotent)' : ''}  input ${JSON.stringify(spec.input)}`),
          `  instances  ${r.instances.length} ready${r.queued ? `, ${r.queued} messages waiting` : ''}`,
          ...r.instances.map((i) => `    ${i.id} on ${i.hostId}  ${i.inFlight} in flight, ready ${ago(i.readyAt)}`),
        ];
        return lines.join('\n');
      });
    },
  );

  withProviderOptions(service.command('rm <name>').description('unregister a service and undeploy its instances')).action(async (name: string, opts: ClientOptions) => {
    const r = await providerRequest<{ removed: string; stopped: number }>(opts, 'DELETE', `/api/v1/services/${encodeURIComponent(name)}`);
    printResult(opts, r, () => `removed ${r.removed}; ${r.stopped} instance(s) undeployed`);
  });

  withProviderOptions(
    service.command('deploy <name>').description('deploy instances now, without waiting for a message').option('--count <n>', 'instances to add, spread across hosts', '1'),
  ).action(async (name: string, opts: ClientOptions & { count: string }) => {
    const count = Number(opts.count);
    if (!Number.isInteger(count) || count < 1) throw new ShoalError('invalid', `--count must be a positive integer, got ${JSON.stringify(opts.count)}`, { field: 'count' });
    const r = await providerRequest<{ deployments: DeploymentSummary[]; errors: string[] }>(opts, 'POST', `/api/v1/services/${encodeURIComponent(name)}/deployments`, { count });
    printResult(opts, r, () =>
      [
        ...r.deployments.map((d) => `${d.state.padEnd(7)} ${d.instanceId ?? '-'} on ${d.hostId ?? '-'}${d.timeline ? ` in ${Math.round(d.timeline.totalMs)} ms` : ''}${d.error ? `: ${d.error}` : ''}`),
        ...r.errors.map((e) => `error: ${e}`),
      ].join('\n'),
    );
  });
}
