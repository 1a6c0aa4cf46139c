// shoal call: one message to a service's operation through the provider. This is the
// command people run most and the one whose start-up shows, so its path (runCall) loads
// only node:http(s) and the error module: no commander, no undici, no protocol door
// (TypeBox and the schemas), no other command (see main.ts). bench/cli-call.ts times it
// against curl.
import type { Command } from 'commander';
import type { IncomingMessage } from 'node:http';
import { ShoalError } from '../../protocol/errors.ts';
import { errorFrom, providerUrl, withProviderOptions, type ClientOptions } from './client-options.ts';
import { authHeader } from './credentials.ts';

export function registerCallCommand(program: Command): void {
  withProviderOptions(
    program
      .command('call <service> <operation> [json]')
      .description("send a message to a service's operation through the provider and print the reply (JSON body; default {})"),
  ).action((service: string, operation: string, json: string | undefined, opts: ClientOptions) => sendCall(service, operation, json, opts));
}

/**
 * `shoal call …` as main.ts runs it: argv read with node:util's parseArgs (built in, so
 * no commander on this path), the same options as registerCallCommand declares (plus the
 * global --log-format, which call does not use, and --tls-ca).
 */
export async function runCall(argv: string[]): Promise<void> {
  let parsed: { values: { url?: string; token?: string; json?: boolean; 'tls-ca'?: string }; positionals: string[] };
  try {
    parsed = process.getBuiltinModule('node:util').parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { url: { type: 'string' }, token: { type: 'string' }, json: { type: 'boolean' }, 'log-format': { type: 'string' }, 'tls-ca': { type: 'string' } },
    });
  } catch (e) {
    throw new ShoalError('invalid', `${(e as Error).message} (see shoal call --help)`, { field: 'argv' });
  }
  const [, service, operation, json, ...extra] = parsed.positionals;
  if (service === undefined || operation === undefined) throw new ShoalError('invalid', `missing argument '${service === undefined ? 'service' : 'operation'}' (usage: shoal call <service> <operation> [json])`, { field: 'argv' });
  if (extra.length > 0) throw new ShoalError('invalid', `too many arguments: ${JSON.stringify(extra)} (usage: shoal call <service> <operation> [json]; quote the JSON)`, { field: 'argv' });
  const ca = parsed.values['tls-ca'] ?? process.env.SHOAL_TLS_CA;
  if (ca !== undefined && ca !== '') (await import('../../http/index.ts')).trustCaFile(ca);
  const { url, token, json: asJson } = parsed.values;
  await sendCall(service, operation, json, { ...(url === undefined ? {} : { url }), ...(token === undefined ? {} : { token }), ...(asJson === undefined ? {} : { json: asJson }) });
}

async function sendCall(service: string, operation: string, json: string | undefined, opts: ClientOptions): Promise<void> {
  const body = json ?? '{}';
  try {
    JSON.parse(body);
  } catch (e) {
    throw new ShoalError('invalid', `the message is not JSON: ${(e as Error).message}`, { field: 'json' });
  }
  const base = providerUrl(opts);
  const path = `/s/${encodeURIComponent(service)}/${encodeURIComponent(operation)}`;
  let res: { status: number; text: string };
  try {
    res = await post(`${base}${path}`, body, { 'content-type': 'application/json', ...authHeader(opts) });
  } catch (e) {
    const cause = (e as { code?: string }).code ?? (e as Error).message;
    throw new ShoalError('unavailable', `cannot reach the provider at ${base} (${cause}); is \`shoal up\` running? (--url / SHOAL_URL)`);
  }
  const { status, text } = res;
  if (status < 200 || status > 299) throw errorFrom(status, text, ''); // the provider's message names the service and operation
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
}

/**
 * POSTs `body` and reads the whole reply. node:https uses its global agent, which trusts
 * the operator's CA once --tls-ca / SHOAL_TLS_CA is set (main.ts, http/tls.ts).
 * process.getBuiltinModule, not `import … from 'node:http'`: an ES import of node:http
 * reads every export, and its WebSocket getter loads Node's internal undici, http2 and
 * TLS (~80 ms of CPU, measured with --cpu-prof); node:https only when the URL wants it.
 */
function post(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? process.getBuiltinModule('node:https').request : process.getBuiltinModule('node:http').request;
    const req = send(url, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
