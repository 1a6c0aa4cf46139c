// `shoal status`: the platform at a glance, from the provider's API: hosts (state, load),
// services (ready, queued), instances, and the recent failures (failed deployments, dead
// hosts, crashed instances).
import type { Command } from 'commander';
import type { DeploymentSummary, HostSummary, InstanceSummary, ServiceSummary } from '../../protocol/index.ts';
import { printResult, table } from '../output.ts';
import { ago, providerRequest, providerUrl, withProviderOptions, type ClientOptions } from './provider-client.ts';

interface EventSummary {
  id: number;
  at: number;
  kind: string;
  service?: string;
  hostId?: string;
  instanceId?: string;
  detail?: unknown;
}

const FAILURE_EVENT = /dead|crash|fail|oom|suspect/;
const RECENT = 5;

export function registerStatusCommand(program: Command): void {
  withProviderOptions(program.command('status').description('the platform at a glance: hosts, services, instances, recent failures')).action(async (opts: ClientOptions) => {
    const [hosts, services, instances, failed, events] = await Promise.all([
      providerRequest<{ hosts: HostSummary[] }>(opts, 'GET', '/api/v1/hosts'),
      providerRequest<{ services: ServiceSummary[] }>(opts, 'GET', '/api/v1/services'),
      providerRequest<{ instances: InstanceSummary[]; unreachable: string[] }>(opts, 'GET', '/api/v1/instances'),
      providerRequest<{ deployments: DeploymentSummary[] }>(opts, 'GET', '/api/v1/deployments?state=failed'),
      providerRequest<{ events: EventSummary[] }>(opts, 'GET', '/api/v1/events?limit=200'),
    ]);
    const status = {
      provider: providerUrl(opts),
      hosts: hosts.hosts.map((h) => ({ id: h.id, state: h.state, controlUrl: h.controlUrl, lastSeen: h.lastSeen, ...(h.report === undefined ? {} : { load: loadOf(h) }) })),
      services: services.services.map((s) => ({ name: s.name, version: s.version, ready: s.ready, queued: s.queued, instances: instances.instances.filter((i) => i.service === s.name).length })),
      instances: instances.instances,
      unreachableHosts: instances.unreachable,
      recentFailures: {
        deployments: failed.deployments.sort((a, b) => b.updatedAt - a.updatedAt).slice(0, RECENT),
        events: events.events.filter((e) => FAILURE_EVENT.test(e.kind)).slice(-RECENT).reverse(),
      },
    };
    printResult(opts, status, () => human(status));
  });
}

function loadOf(h: HostSummary): { instances: number; memoryMb: string } | undefined {
  const r = h.report;
  if (r === undefined) return undefined;
  return { instances: r.load.instances, memoryMb: `${r.reserved.memoryMb} / ${r.capacity.memoryMb}` };
}

function human(s: {
  provider: string;
  hosts: Array<{ id: string; state: string; lastSeen: number; load?: { instances: number; memoryMb: string } | undefined }>;
  services: Array<{ name: string; version: string; ready: number; queued: number; instances: number }>;
  instances: InstanceSummary[];
  unreachableHosts: string[];
  recentFailures: { deployments: DeploymentSummary[]; events: EventSummary[] };
}): string {
  const now = Date.now();
  const out = [`provider ${s.provider}`, ''];
  out.push(`hosts (${s.hosts.length})`);
  out.push(s.hosts.length === 0 ? '  none: start one with shoal host --provider … (or shoal up)' : indent(table(['HOST', 'STATE', 'INSTANCES', 'MEMORY MiB', 'SEEN'], s.hosts.map((h) => [h.id, h.state, String(h.load?.instances ?? '?'), h.load?.memoryMb ?? '?', ago(h.lastSeen, now)]))));
  out.push('', `services (${s.services.length})`);
  out.push(s.services.length === 0 ? '  none: shoal deploy PATH' : indent(table(['SERVICE', 'VERSION', 'INSTANCES', 'READY', 'QUEUED'], s.services.map((v) => [v.name, v.version, String(v.instances), String(v.ready), String(v.queued)]))));
  out.push('', `instances (${s.instances.length})`);
  if (s.instances.length > 0) out.push(indent(table(['INSTANCE', 'SERVICE', 'HOST', 'STATE', 'DRIVER', 'CREATED'], s.instances.map((i) => [i.id, i.service, i.hostId, i.state, i.driver, ago(i.createdAt, now)]))));
  if (s.unreachableHosts.length > 0) out.push(`  unreachable hosts: ${s.unreachableHosts.join(', ')}`);
  const { deployments, events } = s.recentFailures;
  out.push('', 'recent failures');
  if (deployments.length === 0 && events.length === 0) out.push('  none');
  for (const d of deployments) out.push(`  ${ago(d.updatedAt, now)}  deployment ${d.id} of ${d.service} failed: ${d.error ?? 'no reason recorded'}`);
  for (const e of events) out.push(`  ${ago(e.at, now)}  ${e.kind}${e.service ? ` ${e.service}` : ''}${e.instanceId ? ` ${e.instanceId}` : ''}${e.hostId ? ` on ${e.hostId}` : ''}`);
  return out.join('\n');
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}
