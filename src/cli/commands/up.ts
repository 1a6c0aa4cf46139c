import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseImageRef } from '../../protocol/index.ts';
import { formatBytes } from '../output.ts';
import { defaultCapacity } from './host.ts';
import { listenerTls, parseDriver, parseListen, untilSignal, withListenerTlsOptions, type ListenerTlsFlags } from './common.ts';
import { hostDataDir } from './reachable-dir.ts';

// The starter service (src/cli/starter/) is written against shoal/service and bundled
// into a small overlay; its description is what the provider registers.
const starter = () => import('../starter/echo.ts');

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
  withListenerTlsOptions(program
    .command('up'))
    .description('the platform on one machine: store + provider + one host on one address, state in ./.shoal/')
    .option('--listen <host:port>', 'address of the provider (messages, API) and the store (/v2/)', '127.0.0.1:7070')
    .option('--data <dir>', 'state directory', './.shoal')
    .option('--driver <name>', 'instance driver (default: runc when present and root, else process)')
    .option('--db <url|path>', 'registry database (env SHOAL_DATABASE_URL; default <data>/shoal.db)')
    .option('--no-anonymous-pull', 'image pulls from the store need a read token too')
    .option('--advertise <host>', 'the address other machines reach this one at, put in the URLs hosts get (default: the --listen host, or 127.0.0.1 on a wildcard)')
    .option('--join-token <token>', 'token other hosts register with (env SHOAL_JOIN_TOKEN; default: a random one, not shown)')
    .option('--json', 'print one JSON line (addresses, token path) when ready instead of the human lines')
    .action(async (opts: { listen: string; data: string; driver?: string; db?: string; anonymousPull: boolean; advertise?: string; joinToken?: string; json?: boolean } & ListenerTlsFlags) => {
      // From here on Ctrl-C stops in order: a signal during the start stops right after it.
      const stopped = untilSignal();
      const listen = parseListen(opts.listen);
      const secure = await listenerTls(opts);
      const driver = await parseDriver(opts.driver);
      const dataDir = resolve(opts.data);
      await prepareStateDir(dataDir); // the store inside is 0700
      const { defaultDriverName } = await import('../../host/index.ts');
      const effectiveDriver = driver ?? (await defaultDriverName());
      const { auth } = await import('../../provider/index.ts');
      await auth.secureDir(dataDir); // 0700: it holds the registry and the admin token
      const image = await import('../../image/index.ts');
      const { startProvider } = await import('../../provider/index.ts');
      const { createLogger } = await import('../logger.ts');
      const log = createLogger('up');
      // Human lines on stdout, logs on stderr; --json keeps stdout to the one ready line.
      const say = (line: string) => void (opts.json ? undefined : process.stdout.write(`${line}\n`));
      if (driver === undefined && effectiveDriver === 'process') say(isolationHint());
      const hostData = await hostDataDir(dataDir, { processAsRoot: effectiveDriver === 'process' && process.getuid?.() === 0 });
      if (hostData.relocated) say(`host state in ${hostData.dir} (instances run as an unprivileged user and cannot enter ${dataDir})`);

      // The store is not a server of its own here: its app is mounted in the provider's
      // server, so one address serves messages, the provider API and the OCI registry.
      const storeDir = join(dataDir, STORE_DIR);
      const blobs = image.createBlobStore({ dir: storeDir });
      const imageStore = image.createImageStore({ dir: storeDir, blobs, vetLayer: image.layerVetter(blobs) });
      const storeApp = image.createStoreApp({ store: imageStore, blobs, logger: log });
      // Uploads an earlier run left half-done: failing to drop them costs disk, not a start.
      await blobs.expireUploads(60 * 60_000).catch((e: unknown) => log.warn({ err: String(e), dir: storeDir }, 'cannot expire stale uploads'));

      const database = opts.db ?? process.env.SHOAL_DATABASE_URL ?? join(dataDir, 'shoal.db');
      let pullToken: string | undefined;
      const provider = await startProvider({
        auth: { anonymousPull: opts.anonymousPull },
        storeToken: () => pullToken,
        registryAuthFile: process.env.SHOAL_REGISTRY_AUTH_FILE ?? join(dataDir, 'registry-auth.json'),
        listen,
        ...secure,
        database,
        store: storeApp,
        joinToken: opts.joinToken ?? process.env.SHOAL_JOIN_TOKEN ?? randomBytes(18).toString('base64url'),
        ...(opts.advertise === undefined ? {} : { advertiseHost: opts.advertise }),
        providerId: `up:${listen.port}`,
        logger: log,
      });
      let host: Awaited<ReturnType<typeof import('../../host/index.ts').startHost>> | undefined;
      // Tokens this run made for its own roles: revoked when it stops, so restarts leave none behind.
      const runTokens: string[] = [];
      const stopAll = async () => {
        for (const id of runTokens) await provider.registry.revokeApiToken(id, Date.now()).catch((e: unknown) => log.warn({ token: id, err: String(e) }, 'revoking a token of this run failed'));
        await provider.close();
        await host?.close({ stopInstances: true });
      };
      try {
        const admin = await auth.ensureAdminToken(dataDir, provider.registry);
        say(`${admin.created ? 'made an admin token' : 'admin token'}: ${admin.path} (the CLI reads it from there; shoal token create for others)`);
        // Pulls closed: the provider resolves images and the host pulls layers with a read token.
        if (!opts.anonymousPull) {
          const made = await auth.createApiToken(provider.registry, { role: 'read', note: 'shoal up: image pulls' });
          runTokens.push(made.token.id);
          pullToken = made.secret;
        }
        // The host pushes and pulls captured states (snapshot, suspend, fork, migrate), which
        // hold services' memory: never anonymous, a deploy token.
        const hostToken = await auth.createApiToken(provider.registry, { role: 'deploy', note: "shoal up: the host's layer pulls and state pushes" });
        runTokens.push(hostToken.token.id);
        const hostStoreToken = hostToken.secret;
        const client = image.createRegistryClient({ baseUrl: provider.url, token: admin.secret });
        // First start: build the node template and the starter echo service into the store.
        const major = process.versions.node.split('.')[0];
        const templateName = `template://node/${major}`;
        const templateRef = parseImageRef(templateName);
        if (!(await client.getManifest(templateRef.repository, templateRef.tag!))) {
          say(`building ${templateName} from this machine's Node.js…`);
          const t = await image.buildNodeTemplate({ client });
          say(`  ${t.name} = ${t.manifestDigest} (${formatBytes(t.imageSize)})`);
        }
        const { STARTER_IMAGE, STARTER_ENTRY, starterDescription: echoDescription } = await starter();
        const echoRef = parseImageRef(STARTER_IMAGE);
        if (!(await client.getManifest(echoRef.repository, echoRef.tag!))) {
          say(`building ${STARTER_IMAGE} (the starter echo service on shoal/service) on ${templateName}…`);
          const b = await image.buildServiceImage({ client, entry: STARTER_ENTRY, template: templateRef, ref: echoRef, owner: { uid: 0, gid: 0 } });
          say(`  ${STARTER_IMAGE} = ${b.manifestDigest}: overlay ${formatBytes(b.layer.size)} of ${formatBytes(b.imageSize)}`);
        }

        const { startHost } = await import('../../host/index.ts');
        const token = randomBytes(18).toString('base64url');
        host = await startHost({
          dataDir: hostData.dir,
          // Only the provider and the store face the network; the host's planes stay on loopback.
          listen: { host: '127.0.0.1', port: 0 },
          token,
          storeToken: hostStoreToken,
          capacity: defaultCapacity(),
          ...(driver === undefined ? {} : { driver }),
          logger: log,
        });
        await provider.registerHost({ controlUrl: host.controlUrl, token });
        if ((await provider.registry.getService(echoDescription.name)) === undefined) {
          // The example is open to anyone on loopback, closed (token access) on any other address.
          await provider.registerService({ ...echoDescription, access: isLoopback(listen.host) ? 'public' : 'token' });
          say(`registered the ${echoDescription.name} service (operations ${Object.keys(echoDescription.operations).join(', ')})`);
        }
      } catch (e) {
        // The start's own error is the one to report; a failed cleanup is logged beside it.
        await stopAll().catch((stopError: unknown) => log.error({ err: String(stopError) }, 'stopping what had started failed too'));
        throw e;
      }

      if (opts.json) {
        const ready = { dashboard: `${provider.url}/ui/`, state: dataDir, hostData: hostData.dir, adminToken: join(dataDir, 'admin-token'), provider: provider.url, store: provider.url, driver: effectiveDriver, host: { id: host.hostId, controlUrl: host.controlUrl, dataUrl: host.dataUrl } };
        process.stdout.write(`${JSON.stringify(ready)}\n`);
      }
      say(`shoal up: state in ${dataDir}`);
      say(`  provider   ${provider.url}  (messages POST ${provider.url}/s/<service>/<operation>, API ${provider.url}/api/v1/, ${provider.url}/openapi.json)`);
      say(`  store      ${provider.url}  (OCI registry ${provider.url}/v2/)`);
      say(`  dashboard  ${provider.url}/ui/  (log in with the admin token: ${join(dataDir, 'admin-token')})`);
      say(`  host       ${host.hostId}  control ${host.controlUrl}, data plane ${host.dataUrl}`);
      say(`  try        shoal call echo Echo '{"message":"hello"}'`);
      say('Ctrl-C stops everything.');
      await stopped;
      say('stopping…');
      await stopAll();
    });
}

/** The one command that brings runc (and the rest of isolation) to this machine. */
function isolationHint(): string {
  const script = fileURLToPath(new URL('../../../scripts/setup-system.sh', import.meta.url));
  const command = existsSync(script) ? `sudo bash ${script}` : 'sudo bash scripts/setup-system.sh (in a Shoal checkout)';
  return `no runc here (or not root): instances run as plain processes, NOT isolated. For isolation install the system packages: ${command}`;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
