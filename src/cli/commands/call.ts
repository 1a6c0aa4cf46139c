import type { Command } from 'commander';
import { fetch, type Response } from 'undici';
import { ShoalError } from '../../protocol/index.ts';
import { errorFrom, providerUrl, withProviderOptions, type ClientOptions } from './provider-client.ts';
import { authHeader } from './credentials.ts';

export function registerCallCommand(program: Command): void {
  withProviderOptions(
    program
      .command('call <service> <operation> [json]')
      .description("send a message to a service's operation through the provider and print the reply (JSON body; default {})"),
  ).action(async (service: string, operation: string, json: string | undefined, opts: ClientOptions) => {
    const body = json ?? '{}';
    try {
      JSON.parse(body);
    } catch (e) {
      throw new ShoalError('invalid', `the message is not JSON: ${(e as Error).message}`, { field: 'json' });
    }
    const base = providerUrl(opts);
    const path = `/s/${encodeURIComponent(service)}/${encodeURIComponent(operation)}`;
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...authHeader(opts) }, body });
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
      throw new ShoalError('unavailable', `cannot reach the provider at ${base} (${cause}); is \`shoal up\` running? (--url / SHOAL_URL)`);
    }
    const text = await res.text();
    if (!res.ok) throw errorFrom(res.status, text, ''); // the provider's message names the service and operation
    if (opts.json) {
      process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      return;
    }
    let out = text;
    try {
      out = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // not JSON: print as is
    }
    process.stdout.write(out.endsWith('\n') ? out : `${out}\n`);
  });
}
