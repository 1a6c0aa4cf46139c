import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseImageRef } from '../../protocol/image-ref.ts';
import { formatBytes } from '../output.ts';
import { defaultCapacity } from './host.ts';
import { parseListen, untilSignal } from './common.ts';

export const ECHO_SOURCE = fileURLToPath(new URL('../../../examples/echo/rootfs', import.meta.url));
export const ECHO_IMAGE = 'echo:1';

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('the platform on one machine: store + host (and, later, provider), state in ./.shoal/')
    .option('--listen <host:port>', 'address of the store (and later the provider)', '127.0.0.1:7070')
    .option('--data <dir>', 'state directory', './.shoal')
    .option('--driver <name>', 'runc | process (default: runc when present and root)')
    .action(async (opts: { listen: string; data: string; driver?: string }) => {
      const listen = parseListen(opts.listen);
      const dataDir = resolve(opts.data);
      await mkdir(dataDir, { recursive: true });
      const image = await import('../../image/index.ts');
      const { createLogger } = await import('../logger.ts');
      const log = createLogger('up');

      const store = await image.startStore({ dataDir: join(dataDir, 'store'), host: listen.host, port: listen.port, logger: log });
      const client = image.createRegistryClient({ baseUrl: store.url });
      const say = (line: string) => process.stdout.write(`${line}\n`);

      // First start: build the node template and the echo example into the store.
      const major = process.versions.node.split('.')[0];
      const templateName = `template://node/${major}`;
      const templateRef = parseImageRef(templateName);
      if (!(await client.getManifest(templateRef.repository, templateRef.tag!))) {
        say(`building ${templateName} from this machine's Node.js…`);
        const t = await image.buildNodeTemplate({ client });
        say(`  ${t.name} = ${t.manifestDigest} (${formatBytes(t.imageSize)})`);
      }
      const echoRef = parseImageRef(ECHO_IMAGE);
      if (!(await client.getManifest(echoRef.repository, echoRef.tag!))) {
        say(`building ${ECHO_IMAGE} on ${templateName}…`);
        const b = await image.buildImage({
          client,
          source: ECHO_SOURCE,
          template: templateRef,
          ref: echoRef,
          owner: { uid: 0, gid: 0 },
          process: { cmd: ['/usr/local/bin/node', '/app/server.mjs'], workdir: '/app' },
        });
        say(`  ${ECHO_IMAGE} = ${b.manifestDigest}: overlay ${formatBytes(b.layer.size)} of ${formatBytes(b.imageSize)}`);
      }

      const { startHost } = await import('../../host/index.ts');
      const token = randomBytes(18).toString('base64url');
      const host = await startHost({
        dataDir: join(dataDir, 'host'),
        listen: { host: listen.host, port: 0 },
        token,
        capacity: defaultCapacity(),
        ...(opts.driver === 'runc' || opts.driver === 'process' ? { driver: opts.driver } : {}),
        logger: log,
      });

      say(`shoal up: state in ${dataDir}`);
      say(`  store      ${store.url}  (OCI registry ${store.url}/v2/, API ${store.url}/openapi.json)`);
      say(`  host       ${host.controlUrl}  (token ${token})`);
      say(`  data plane ${host.dataUrl}`);
      say('Ctrl-C stops everything.');
      await untilSignal();
      say('stopping…');
      await host.close({ stopInstances: true });
      await store.close();
    });
}
