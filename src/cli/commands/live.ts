// Live state from the command line (issue 15): pause, resume, snapshot, suspend, fork and
// migrate an instance; list, restore and forget saved states. Each is one provider call
// (src/provider/live-ops-api.ts); a driver that cannot do it is refused there with the
// capability named, and the CLI exits non-zero with that message.
import type { Command } from 'commander';
import { ShoalError } from '../../protocol/index.ts';
import { formatBytes, printResult, table } from '../output.ts';
import { providerRequest, withProviderOptions, type ClientOptions } from './provider-client.ts';

interface InstanceView {
  id: string;
  service: string;
  version: string;
  host: string;
}
interface StateView {
  id: string;
  service: string;
  version: string;
  digest: string;
  size: number;
  driver: string;
  reason: string;
  label?: string;
  sourceInstance?: string;
  createdAt: number;
  expiresAt?: number;
}

const path = (id: string, op: string) => `/api/v1/instances/${encodeURIComponent(id)}/${op}`;

function ttlSeconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (m === null) throw new ShoalError('invalid', `--keep: a duration such as 90s, 30m, 12h or 7d, got ${JSON.stringify(text)}`, { field: 'keep' });
  return Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]!]!;
}

const stateLine = (s: StateView) => `state ${s.id} of ${s.service}@${s.version} (${s.driver}, ${formatBytes(s.size)}${s.expiresAt === undefined ? '' : `, kept until ${new Date(s.expiresAt).toISOString()}`})`;

export function registerLiveCommands(program: Command): void {
  withProviderOptions(program.command('pause <instance>').description('freeze an instance in memory (drivers that can pause); its messages wait until resume')).action(
    async (id: string, opts: ClientOptions) => {
      const r = await providerRequest<{ paused: string }>(opts, 'POST', path(id, 'pause'));
      printResult(opts, r, () => `paused ${r.paused}`);
    },
  );
  withProviderOptions(program.command('resume <instance>').description('unfreeze a paused instance')).action(async (id: string, opts: ClientOptions) => {
    const r = await providerRequest<{ instance: InstanceView }>(opts, 'POST', path(id, 'resume'));
    printResult(opts, r, () => `resumed ${r.instance.id} on ${r.instance.host}`);
  });
  withProviderOptions(
    program
      .command('snapshot <instance>')
      .description("capture an instance's running state into the store (drivers that can snapshot); it keeps serving")
      .option('--label <label>', 'a name for the state')
      .option('--keep <duration>', 'expire the state after this long (90s, 30m, 12h, 7d; default: kept until removed)'),
  ).action(async (id: string, opts: ClientOptions & { label?: string; keep?: string }) => {
    const ttl = ttlSeconds(opts.keep);
    const r = await providerRequest<{ state: StateView }>(opts, 'POST', path(id, 'snapshot'), { ...(opts.label === undefined ? {} : { label: opts.label }), ...(ttl === undefined ? {} : { ttlSeconds: ttl }) });
    printResult(opts, r, () => `${stateLine(r.state)}\n  digest ${r.state.digest}`);
  });
  withProviderOptions(
    program
      .command('suspend <instance>')
      .description('capture the state, then remove the instance (frees the host); `shoal restore STATE` brings it back')
      .option('--keep <duration>', 'expire the state after this long (default: kept until removed)'),
  ).action(async (id: string, opts: ClientOptions & { keep?: string }) => {
    const ttl = ttlSeconds(opts.keep);
    const r = await providerRequest<{ state: StateView }>(opts, 'POST', path(id, 'suspend'), ttl === undefined ? {} : { ttlSeconds: ttl });
    printResult(opts, r, () => `suspended ${id}: ${stateLine(r.state)}`);
  });
  withProviderOptions(program.command('fork <instance>').description('start a copy of a running instance on its host (drivers that can fork); both serve')).action(
    async (id: string, opts: ClientOptions) => {
      const r = await providerRequest<{ instance: InstanceView }>(opts, 'POST', path(id, 'fork'));
      printResult(opts, r, () => `forked ${id} → ${r.instance.id} on ${r.instance.host}`);
    },
  );
  withProviderOptions(
    program
      .command('migrate <instance>')
      .description('move a running instance to another host with its state; no message is lost or run twice')
      .option('--to <host>', 'the host to move to (default: placement picks one)'),
  ).action(async (id: string, opts: ClientOptions & { to?: string }) => {
    const r = await providerRequest<{ from: { instance: string; host: string }; to: { instance: string; host: string }; state: string }>(
      opts,
      'POST',
      path(id, 'migrate'),
      opts.to === undefined ? {} : { host: opts.to },
    );
    printResult(opts, r, () => `moved ${r.from.instance} (${r.from.host}) → ${r.to.instance} (${r.to.host})`);
  });
  withProviderOptions(program.command('states [service]').description('saved states: snapshots and suspended instances')).action(async (service: string | undefined, opts: ClientOptions) => {
    const r = await providerRequest<{ states: StateView[] }>(opts, 'GET', `/api/v1/states${service === undefined ? '' : `?service=${encodeURIComponent(service)}`}`);
    printResult(opts, r, () =>
      r.states.length === 0
        ? 'no saved states'
        : table(
            ['STATE', 'SERVICE', 'DRIVER', 'REASON', 'LABEL', 'SIZE', 'FROM', 'TAKEN'],
            r.states.map((s) => [s.id, `${s.service}@${s.version}`, s.driver, s.reason, s.label ?? '', formatBytes(s.size), s.sourceInstance ?? '', new Date(s.createdAt).toISOString()]),
          ),
    );
  });
  withProviderOptions(
    program
      .command('restore <state>')
      .description('start a new instance from a saved state')
      .option('--to <host>', 'the host to start it on (default: placement picks one whose driver took the state)'),
  ).action(async (state: string, opts: ClientOptions & { to?: string }) => {
    const r = await providerRequest<{ instance: InstanceView }>(opts, 'POST', `/api/v1/states/${encodeURIComponent(state)}/restore`, opts.to === undefined ? {} : { host: opts.to });
    printResult(opts, r, () => `restored ${state} → ${r.instance.id} on ${r.instance.host}`);
  });
}
