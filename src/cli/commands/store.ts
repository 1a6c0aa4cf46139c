import type { Command } from 'commander';
import { join } from 'node:path';
import { listenerTls, parseListen, untilSignal, withListenerTlsOptions, type ListenerTlsFlags } from './common.ts';

export function registerStoreCommands(program: Command): void {
  withListenerTlsOptions(program
    .command('store'))
    .description('serve the image store: the OCI registry API under /v2/ and the control API under /api/v1/')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7071')
    .option('--data <dir>', 'where blobs, manifests and tags live', './.shoal/store')
    .option('--no-anonymous-pull', 'image pulls need the token too')
    .option('--json', 'print one JSON line (URL, token path) when ready')
    .action(async (opts: { listen: string; data: string; anonymousPull: boolean; json?: boolean } & ListenerTlsFlags) => {
      const listen = parseListen(opts.listen);
      const secure = await listenerTls(opts);
      const { startStore } = await import('../../image/index.ts');
      const { auth } = await import('../../provider/index.ts');
      const { createLogger } = await import('../logger.ts');
      const log = createLogger('store');
      // Standalone, the store has no registry: one admin token of its own, in a file (0600)
      // in its data directory, and an audit trail as JSON lines beside it.
      await auth.secureDir(opts.data);
      const token = await auth.ensureTokenFile(join(opts.data, 'store-token'));
      const gate = auth.createAuthGate({
        verifier: auth.createStaticVerifier([{ secret: token.secret, role: 'admin' }]),
        anonymousPull: opts.anonymousPull,
        audit: auth.createFileAuditSink(join(opts.data, 'audit.jsonl')),
        log,
      });
      const store = await startStore({ dataDir: opts.data, host: listen.host, port: listen.port, gate, logger: log, ...secure });
      // Listen for Ctrl-C before saying ready: a signal right after the ready line must stop in order.
      const stopped = untilSignal();
      if (opts.json) process.stdout.write(`${JSON.stringify({ store: store.url, data: opts.data, token: token.path, anonymousPull: opts.anonymousPull })}\n`);
      else process.stdout.write(
        `shoal store: serving ${opts.data} at ${store.url} (registry ${store.url}/v2/, OpenAPI ${store.url}/openapi.json)\n` +
          `  token      ${token.path}${token.created ? ' (made now)' : ''}: pushes, tags, deletes and gc need it${opts.anonymousPull ? '' : ', pulls too'}\n`,
      );
      await stopped;
      await store.close();
    });
}
