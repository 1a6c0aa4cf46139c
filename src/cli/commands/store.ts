import type { Command } from 'commander';
import { parseListen, untilSignal } from './common.ts';

export function registerStoreCommands(program: Command): void {
  program
    .command('store')
    .description('serve the image store: the OCI registry API under /v2/ and the control API under /api/v1/')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:7071')
    .option('--data <dir>', 'where blobs, manifests and tags live', './.shoal/store')
    .action(async (opts: { listen: string; data: string }) => {
      const listen = parseListen(opts.listen);
      const { startStore } = await import('../../image/index.ts');
      const store = await startStore({ dataDir: opts.data, host: listen.host, port: listen.port });
      process.stdout.write(`shoal store: serving ${opts.data} at ${store.url} (registry ${store.url}/v2/, OpenAPI ${store.url}/openapi.json)\n`);
      await untilSignal();
      await store.close();
    });
}
