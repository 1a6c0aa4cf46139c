// `shoal logs SERVICE|INSTANCE [-f]`: an instance's log through the provider, which asks
// the host that runs it (a read token is enough). A service name means each of its
// instances, lines prefixed with the instance id when there are several.
import type { Command } from 'commander';
import { fetch } from 'undici';
import type { InstanceSummary } from '../../protocol/index.ts';
import { ShoalError } from '../../protocol/index.ts';
import { authHeader } from './credentials.ts';
import { errorFrom, providerRequest, providerUrl, withProviderOptions, type ClientOptions } from './provider-client.ts';

interface LogsOptions extends ClientOptions {
  follow?: boolean;
  tail: string;
}

export function registerLogsCommand(program: Command): void {
  withProviderOptions(
    program
      .command('logs <target>')
      .description("an instance's log (stdout and stderr); a service name shows each of its instances")
      .option('-f, --follow', 'keep printing what the instances write, until Ctrl-C')
      .option('--tail <lines>', 'lines to start with', '100'),
  ).action(async (target: string, opts: LogsOptions) => {
    if (!/^\d+$/.test(opts.tail) || Number(opts.tail) < 1) throw new ShoalError('invalid', `--tail must be a positive integer, got ${JSON.stringify(opts.tail)}`, { field: 'tail' });
    const { instances } = await providerRequest<{ instances: InstanceSummary[] }>(opts, 'GET', '/api/v1/instances');
    const ids = instances.some((i) => i.id === target) ? [target] : instances.filter((i) => i.service === target).map((i) => i.id);
    if (ids.length === 0) {
      const known = await providerRequest<unknown>(opts, 'GET', `/api/v1/services/${encodeURIComponent(target)}`).then(
        () => true,
        (e: unknown) => {
          if (e instanceof ShoalError && e.code === 'not-found') return false;
          throw e;
        },
      );
      throw new ShoalError('not-found', known ? `service ${target} has no instances now (it deploys on its first message)` : `no service or instance named ${JSON.stringify(target)}`);
    }
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await Promise.all(ids.map((id) => printLog(opts, id, ids.length > 1 ? id : undefined, stop.signal)));
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
}

/** Streams one instance's log to stdout: plain, prefixed, or as JSON lines (--json). */
async function printLog(opts: LogsOptions, id: string, prefix: string | undefined, signal: AbortSignal): Promise<void> {
  const path = `/api/v1/instances/${encodeURIComponent(id)}/logs?tail=${opts.tail}${opts.follow ? '&follow=1' : ''}`;
  let res;
  try {
    res = await fetch(`${providerUrl(opts)}${path}`, { headers: authHeader(opts), signal });
  } catch (e) {
    if (signal.aborted) return;
    throw new ShoalError('unavailable', `cannot reach the provider at ${providerUrl(opts)}: ${(e as Error).message}`);
  }
  if (!res.ok) throw errorFrom(res.status, await res.text(), `logs of ${id}`);
  let partial = '';
  const emit = (line: string) => {
    if (opts.json) process.stdout.write(`${JSON.stringify({ instance: id, line })}\n`);
    else process.stdout.write(`${prefix === undefined ? '' : `${prefix} | `}${line}\n`);
  };
  try {
    for await (const chunk of res.body!) {
      const lines = (partial + Buffer.from(chunk as Uint8Array).toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) emit(line);
    }
  } catch (e) {
    if (!signal.aborted) throw e; // Ctrl-C ends a followed log; anything else is an error
  }
  if (partial !== '') emit(partial);
}
