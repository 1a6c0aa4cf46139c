// `shoal deploy PATH`: build, push, register, and say how to call it, in one command.
// PATH is a TypeScript service entry (its definition is read from the same module in
// describe-only mode, see src/service/describe.ts) or a directory laid out from / with
// the service's description beside it (service.json, or --describe FILE).
import type { Command } from 'commander';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ShoalError, formatImageRef, parseImageRef } from '../../protocol/index.ts';
import type { ServiceDescription } from '../../protocol/index.ts';
import { formatBytes, printResult } from '../output.ts';
import { resolveToken } from './credentials.ts';
import { providerRequest, providerUrl, withProviderOptions, type ClientOptions } from './provider-client.ts';
import { loadDescription } from './service.ts';

interface DeployOptions extends ClientOptions {
  store?: string;
  template?: string;
  describe?: string;
  cmd?: string;
}

const DESCRIBE_TIMEOUT_MS = 30_000;

export function registerDeployCommand(program: Command): void {
  withProviderOptions(
    program
      .command('deploy <path>')
      .description('build PATH (a TypeScript service entry, or a directory with service.json), push it to the store, register it, and print how to call it')
      .option('--store <url>', 'store to push to (env SHOAL_STORE; default: the provider URL, as with shoal up)')
      .option('--template <ref>', 'template to build on (default template://node/<this Node major>)')
      .option('--describe <file>', 'directory deploys: the service description (JSON or a module exporting it; default PATH/service.json)')
      .option('--cmd <words>', 'directory deploys: the command to run, if the template does not already run it'),
  ).action(async (path: string, opts: DeployOptions) => {
    const found = await stat(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw new ShoalError('not-found', `${path}: no such file or directory`, { field: 'path' });
      throw e;
    });
    const isEntry = found.isFile();
    if (isEntry && (opts.describe !== undefined || opts.cmd !== undefined)) {
      throw new ShoalError('invalid', 'a service entry carries its own definition and command; --describe and --cmd apply to directories', { field: 'path' });
    }
    const description = (isEntry ? await describeEntry(path) : await loadDescription(opts.describe ?? join(path, 'service.json'))) as ServiceDescription;
    if (typeof description?.name !== 'string' || typeof description.version !== 'string') {
      throw new ShoalError('invalid', `${opts.describe ?? path}: the description needs a name and a version`, { field: 'describe' });
    }
    const ref = parseImageRef(description.image ?? `${description.name}:${description.version}`, 'image');
    if (ref.digest !== undefined) throw new ShoalError('invalid', `${description.name}: image ${description.image} is pinned by digest; deploy builds a new image (name:tag, or leave image unset)`, { field: 'image' });

    const image = await import('../../image/index.ts');
    const token = resolveToken(opts);
    const storeBase = opts.store || process.env.SHOAL_STORE || providerUrl(opts); // an empty SHOAL_STORE is unset
    const client = image.createRegistryClient({ baseUrl: storeBase, ...(token === undefined ? {} : { token }) });
    const say = (line: string) => void (opts.json ? undefined : process.stderr.write(`${line}\n`));
    const component = isEntry && image.isComponentDriver(description.driver);
    const template = parseImageRef(opts.template ?? `template://node/${process.versions.node.split('.')[0]}`, 'template');
    if (!component && !(await client.getManifest(template.repository, template.tag ?? 'latest'))) {
      throw new ShoalError('not-found', `the store at ${storeBase} has no ${opts.template ?? formatImageRef(template)}: shoal up builds it on first start, or shoal template node`, { field: 'template' });
    }
    say(component ? `building ${formatImageRef(ref)} as a ${description.driver} component…` : `building ${formatImageRef(ref)} on ${formatImageRef(template)}…`);
    const built = component
      ? await image.buildComponentImage({ client, entry: path, ref, driver: description.driver as string })
      : isEntry
      ? await image.buildServiceImage({ client, entry: path, template, ref, owner: { uid: 0, gid: 0 } })
      : await image.buildImage({ client, source: path, template, ref, owner: { uid: 0, gid: 0 }, process: opts.cmd ? { cmd: opts.cmd.trim().split(/\s+/) } : {} });
    say(`  pushed ${built.reference}: overlay ${formatBytes(built.layer.size)} of ${formatBytes(built.imageSize)}`);
    const registered = await providerRequest<{ service: { name: string; version: string; description: ServiceDescription } }>(opts, 'POST', '/api/v1/services', {
      ...description,
      image: formatImageRef(ref),
    });
    const ops = Object.entries(registered.service.description.operations);
    const [op, spec] = ops[0] ?? ['Op', { input: {} }];
    const example = JSON.stringify(exampleOf(spec.input));
    const result = {
      service: registered.service.name,
      version: registered.service.version,
      image: built.reference,
      operations: ops.map(([name]) => name),
      call: `shoal call ${registered.service.name} ${op} '${example}'`,
      url: `${providerUrl(opts)}/s/${registered.service.name}/${op}`,
    };
    printResult(opts, result, () =>
      [
        `deployed ${result.service} ${result.version} (${result.image}); it starts on its first message`,
        `  call it    ${result.call}`,
        `  or         curl -X POST ${result.url} -H 'content-type: application/json' -d '${example}'`,
        `  its log    shoal logs ${result.service} -f`,
      ].join('\n'),
    );
  });
}

/**
 * The description a service entry defines: the module runs in a child process with
 * SHOAL_DESCRIBE_TO set, so its serve() call writes the description instead of serving.
 */
export async function describeEntry(entry: string): Promise<unknown> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-describe-'));
  const file = join(dir, 'description.json');
  try {
    const child = spawn(process.execPath, [resolve(entry)], {
      env: { ...process.env, SHOAL_DESCRIBE_TO: file },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    const described = await new Promise<string | undefined>((resolveRun, reject) => {
      const timer = setTimeout(() => finish(), DESCRIBE_TIMEOUT_MS);
      // serve() writes the file and returns; a module that keeps running after is stopped.
      const poll = setInterval(() => void readIfThere(file).then((t) => t !== undefined && finish(t), fail), 50);
      child.once('error', fail);
      child.once('exit', () => void readIfThere(file).then(finish, fail));
      let done = false;
      function finish(text?: string): void {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearInterval(poll);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        resolveRun(text);
      }
      function fail(e: unknown): void {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearInterval(poll);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(e);
      }
    });
    if (described === undefined) {
      throw new ShoalError('invalid', `${entry} did not call serve(defineService(…), handlers)${stderr.trim() ? `:\n${stderr.trim()}` : ''}`, { field: 'path' });
    }
    return JSON.parse(described);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The file's content once written whole (serve writes it in one call), else undefined. */
async function readIfThere(file: string): Promise<string | undefined> {
  try {
    const text = await readFile(file, 'utf8');
    JSON.parse(text);
    return text;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || e instanceof SyntaxError) return undefined;
    throw e;
  }
}

/** A sample input from a JSON schema: each property with a placeholder of its type. */
export function exampleOf(schema: unknown): unknown {
  const s = schema as { type?: string; properties?: Record<string, unknown>; required?: string[]; items?: unknown; enum?: unknown[]; const?: unknown } | undefined;
  if (s === undefined || s === null || typeof s !== 'object') return {};
  if (s.const !== undefined) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  switch (s.type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(s.properties ?? {})) if (s.required === undefined || s.required.includes(k)) out[k] = exampleOf(v);
      return out;
    }
    case 'string':
      return '…';
    case 'integer':
    case 'number':
      return 0;
    case 'boolean':
      return false;
    case 'array':
      return [];
    default:
      return {};
  }
}
