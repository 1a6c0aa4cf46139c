import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseImageRef } from '../../protocol/image-ref.ts';
import { formatBytes } from '../output.ts';
import { defaultCapacity } from './host.ts';
import { parseListen, untilSignal } from './common.ts';

// The echo example is written against shoal/service (examples/echo/service.ts) and
// bundled into a small overlay; its description is what the provider registers.
const echoExample = () => import('../../../examples/echo/build.ts');
const echoDefinition = () => import('../../../examples/echo/echo.ts');

const STORE_DIR = 'store';

/**
 * Secrets at rest (issue 9, item 8): the state directory can be traversed but not listed
 * (0711: instances of the process driver run as nobody and reach their tree under host/,
 * which the host keeps 0711 too); the store is 0700; the database and keys are 0600 where
 * they are made (the SQLite driver, the host).
 */
export async function prepareStateDir(dataDir: string): Promise<void> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await chmod(dataDir, 0o711);
  await mkdir(join(dataDir, STORE_DIR), { recursive: true, mode: 0o700 });
  await chmod(join(dataDir, STORE_DIR), 0o700);
}

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('the platform on one machine: store + provider + one host on one address, state in ./.shoal/')
    .option('--listen <host:port>', 'address of the provider (messages, API) and the store (/v2/)', '127.0.0.1:7070')
    .option('--data <dir>', 'state directory', './.shoal')
    .option('--driver <name>', 'runc | process (default: runc when present and root)')
    .option('--db <url|path>', 'registry database (env SHOAL_DATABASE_URL; default <data>/shoal.db)')
    .action(async (opts: { listen: string; data: string; driver?: string; db?: string }) => {
      const listen = parseListen(opts.listen);
      const dataDir = resolve(opts.data);
      await prepareStateDir(dataDir);
      const image = await import('../../image/index.ts');
      const { startProvider } = await import('../../provider/index.ts');
      const { createLogger } = await import('../logger.ts');
      const log = createLogger('up');
      const say = (line: string) => process.stdout.write(`${line}\n`);

      // The store is not a server of its own here: its app is mounted in the provider's
      // server, so one address serves messages, the provider API and the OCI registry.
      const storeDir = join(dataDir, STORE_DIR);
      const blobs = image.createBlobStore({ dir: storeDir });
      const imageStore = image.createImageStore({ dir: storeDir, blobs, vetLayer: image.layerVetter(blobs) });
      const storeApp = image.createStoreApp({ store: imageStore, blobs, logger: log });
      await blobs.expireUploads(60 * 60_000).catch(() => 0);

      const database = opts.db ?? process.env.SHOAL_DATABASE_URL ?? join(dataDir, 'shoal.db');
      const provider = await startProvider({
        listen,
        database,
        store: storeApp,
        joinToken: randomBytes(18).toString('base64url'),
        providerId: `up:${listen.port}`,
        logger: log,
      });
      let host: Awaited<ReturnType<typeof import('../../host/index.ts').startHost>> | undefined;
      const stopAll = async () => {
        await provider.close();
        await host?.close({ stopInstances: true });
      };
      try {
        const client = image.createRegistryClient({ baseUrl: provider.url });
        // First start: build the node template and the echo example into the store.
        const major = process.versions.node.split('.')[0];
        const templateName = `template://node/${major}`;
        const templateRef = parseImageRef(templateName);
        if (!(await client.getManifest(templateRef.repository, templateRef.tag!))) {
          say(`building ${templateName} from this machine's Node.js…`);
          const t = await image.buildNodeTemplate({ client });
          say(`  ${t.name} = ${t.manifestDigest} (${formatBytes(t.imageSize)})`);
        }
        const { ECHO_IMAGE, echoDescription } = await echoDefinition();
        const echoRef = parseImageRef(ECHO_IMAGE);
        if (!(await client.getManifest(echoRef.repository, echoRef.tag!))) {
          say(`building ${ECHO_IMAGE} (examples/echo on shoal/service) on ${templateName}…`);
          const b = await (await echoExample()).buildEchoImage(client, { template: templateName });
          say(`  ${ECHO_IMAGE} = ${b.manifestDigest}: overlay ${formatBytes(b.layer.size)} of ${formatBytes(b.imageSize)}`);
        }

        const { startHost } = await import('../../host/index.ts');
        const token = randomBytes(18).toString('base64url');
        host = await startHost({
          dataDir: join(dataDir, 'host'),
          listen: { host: listen.host, port: 0 },
          token,
          capacity: defaultCapacity(),
          ...(opts.driver === 'runc' || opts.driver === 'process' ? { driver: opts.driver } : {}),
          logger: log,
        });
        await provider.registerHost({ controlUrl: host.controlUrl, token });
        if ((await provider.registry.getService(echoDescription.name)) === undefined) {
          await provider.registerService(echoDescription);
          say(`registered the ${echoDescription.name} service (operations ${Object.keys(echoDescription.operations).join(', ')})`);
        }
      } catch (e) {
        await stopAll().catch(() => undefined);
        throw e;
      }

      say(`shoal up: state in ${dataDir}`);
      say(`  provider   ${provider.url}  (messages POST ${provider.url}/s/<service>/<operation>, API ${provider.url}/api/v1/, ${provider.url}/openapi.json)`);
      say(`  store      ${provider.url}  (OCI registry ${provider.url}/v2/)`);
      say(`  host       ${host.hostId}  control ${host.controlUrl}, data plane ${host.dataUrl}`);
      say(`  try        shoal call echo Echo '{"message":"hello"}'`);
      say('Ctrl-C stops everything.');
      await untilSignal();
      say('stopping…');
      await stopAll();
    });
}
