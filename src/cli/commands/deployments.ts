import type { Command } from 'commander';
import type { DeploymentSummary } from '../../protocol/index.ts';
import { formatBytes, printResult } from '../output.ts';
import { providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

const WIDTH = 40;

/** One deployment's timeline as a text waterfall: a bar per phase on a shared time axis. */
export function waterfall(d: DeploymentSummary, width = WIDTH): string {
  const when = new Date(d.createdAt).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const head = `${d.id.slice(0, 8)}  ${d.state}${d.instanceId ? `  ${d.instanceId}` : ''}${d.hostId ? ` on ${d.hostId}` : ''}  v${d.version}  ${when}`;
  const lines = [head];
  if (d.error) lines.push(`  ${d.state === 'failed' ? 'error' : 'note'}: ${d.error}`);
  const t = d.timeline;
  if (t === undefined || t.phases.length === 0) return lines.join('\n');
  const total = Math.max(t.totalMs, ...t.phases.map((p) => p.endMs), 0.001);
  const scale = width / total;
  for (const p of t.phases) {
    const start = Math.min(width - 1, Math.floor(p.startMs * scale));
    const len = Math.max(1, Math.round((p.endMs - p.startMs) * scale));
    const bar = ' '.repeat(start) + '█'.repeat(Math.min(len, width - start));
    const ms = p.endMs - p.startMs;
    const extra = p.name === 'pull' ? `  ${formatBytes(t.pull.bytes)}, ${t.pull.layersFetched} fetched, ${t.pull.layersCached} cached` : '';
    lines.push(`  ${p.name.padEnd(12)}${bar.padEnd(width)}  ${fmt(ms).padStart(9)}  @${fmt(p.startMs)}${extra}`);
  }
  lines.push(`  ${'total'.padEnd(12)}${''.padEnd(width)}  ${fmt(t.totalMs).padStart(9)}`);
  return lines.join('\n');
}

interface ActivationDetail {
  path: string;
  host: string;
  driver: string;
  ms: number;
  considered: Array<{ path: string; host: string; estimateMs: number }>;
}

export function activationLine(at: number, service: string | undefined, d: ActivationDetail): string {
  const when = new Date(at).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const others = d.considered.filter((c) => !(c.path === d.path && c.host === d.host)).map((c) => `${c.path}@${c.host} ~${fmt(c.estimateMs)}`);
  return `  ${when}  ${service ?? ''}  ${d.path} on ${d.host} (${d.driver}) in ${fmt(d.ms)}${others.length === 0 ? '' : `; weighed against ${others.join(', ')}`}`;
}

function fmt(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

export function registerDeploymentsCommand(program: Command): void {
  withProviderOptions(
    program
      .command('deployments [service]')
      .description("deployments of a service (or all), each with its timeline: queue, place, pull, unpack, create, ready, first reply")
      .option('--state <state>', 'only pending | deploying | ready | failed | stopped')
      .option('--last <n>', 'only the newest N', '10'),
  ).action(async (service: string | undefined, opts: ClientOptions & { state?: string; last: string }) => {
    const q = new URLSearchParams();
    if (service) q.set('service', service);
    if (opts.state) q.set('state', opts.state);
    const r = await providerRequest<{ deployments: DeploymentSummary[] }>(opts, 'GET', `/api/v1/deployments${q.size ? `?${q}` : ''}`);
    const n = Math.max(1, Number(opts.last) || 10);
    const shown = r.deployments.slice(-n);
    // Cold-start attribution: each message that found no warm instance, the path that answered it and what else was weighed.
    const ev = await providerRequest<{ events: Array<{ at: number; kind: string; service?: string; detail: ActivationDetail }> }>(
      opts,
      'GET',
      `/api/v1/events?kind=activated&limit=${n}${service ? `&service=${encodeURIComponent(service)}` : ''}`,
    );
    const activations = ev.events.filter((e) => e.kind === 'activated');
    printResult(opts, { deployments: shown, activations: activations.map((e) => ({ at: e.at, service: e.service, ...e.detail })) }, () => {
      const parts = [shown.length === 0 ? `no deployments${service ? ` of ${service}` : ''}` : shown.map((d) => waterfall(d)).join('\n\n')];
      if (activations.length > 0) parts.push(['activations (messages that found no warm instance):', ...activations.map((e) => activationLine(e.at, e.service, e.detail))].join('\n'));
      return parts.join('\n\n');
    });
  });
}
