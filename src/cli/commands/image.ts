import type { Command } from 'commander';
import { ShoalError, formatImageRef, parseImageRef } from '../../protocol/index.ts';
import { createProgress, formatBytes, printResult, table } from '../output.ts';
import { storeUrl, withStoreOption } from './common.ts';
import { resolveToken } from './credentials.ts';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `--cmd` takes a JSON array or a whitespace-separated command line. */
function parseCommand(text: string | undefined, field: string): string[] | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(t);
    } catch {
      throw new ShoalError('invalid', `--${field} is not a valid JSON array`, { field });
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
      throw new ShoalError('invalid', `--${field} must be an array of strings`, { field });
    }
    return parsed;
  }
  const parts = t.split(/\s+/).filter(Boolean);
  if (parts.length === 0) throw new ShoalError('invalid', `--${field} is empty`, { field });
  return parts;
}

function parseOwner(text: string | undefined): { uid: number; gid: number } | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+):(\d+)$/.exec(text);
  if (!m) throw new ShoalError('invalid', `--owner must be UID:GID, got ${JSON.stringify(text)}`, { field: 'owner' });
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

async function client(opts: { store?: string; token?: string }) {
  const { createRegistryClient } = await import('../../image/index.ts');
  const token = resolveToken(opts);
  return createRegistryClient({ baseUrl: storeUrl(opts), ...(token === undefined ? {} : { token }) });
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('build, move and inspect images in a store');

  withStoreOption(
    image
      .command('build <path>')
      .description(
        "build an image: the template's layers plus one overlay layer of what PATH adds or changes; " +
          'PATH is a directory laid out from / or a TypeScript service entry (bundled with shoal/service); ' +
          'a .wasm or .wat module becomes a wasm component image (no template)',
      )
      .option('--template <ref>', 'template to build on, e.g. template://node/24 (required but with --driver isolate)')
      .option('--driver <name>', 'build a component image for this driver (isolate, or wasm: QuickJS, whose state can be snapshotted): the bundle alone, no template; PATH is a service entry')
      .requiredOption('--tag <name:tag>', 'name of the new image')
      .option('--whole-root', 'DIR is a complete root: what it lacks of the template is deleted (OCI whiteouts)')
      .option('--cmd <cmd>', 'command to run (JSON array or words)')
      .option('--entrypoint <cmd>', 'entrypoint (JSON array or words)')
      .option('--env <NAME=VALUE>', 'environment variable (repeatable)', collect)
      .option('--workdir <dir>', 'working directory inside the image')
      .option('--user <uid[:gid]>', 'user the service runs as')
      .option('--owner <uid:gid>', "owner of DIR's files in the layer (default 0:0; with --whole-root, as on disk)"),
  ).action(
    async (
      dir: string,
      opts: { store?: string; json?: boolean; template?: string; driver?: string; tag: string; wholeRoot?: boolean; cmd?: string; entrypoint?: string; env?: string[]; workdir?: string; user?: string; owner?: string },
    ) => {
      const ref = parseImageRef(opts.tag, 'tag');
      if (/\.(wasm|wat)$/.test(dir)) {
        const { buildWasmComponentImage } = await import('../../image/index.ts');
        const built = await buildWasmComponentImage({ client: await client(opts), module: dir, ref });
        printResult(opts, built, () => `${formatImageRef(ref)} = ${built.reference} (wasm component, ${formatBytes(built.imageSize)})`);
        return;
      }
      if (opts.driver !== undefined) {
        if (opts.template !== undefined || opts.wholeRoot || opts.cmd || opts.entrypoint || opts.workdir || opts.user || opts.owner) {
          throw new ShoalError('invalid', 'a component image (--driver) is its bundle alone: --template, --whole-root, --cmd, --entrypoint, --workdir, --user and --owner do not apply', { field: 'driver' });
        }
        const { buildComponentImage } = await import('../../image/index.ts');
        const built = await buildComponentImage({ client: await client(opts), entry: dir, ref, driver: opts.driver, ...(opts.env ? { env: opts.env } : {}) });
        printResult(opts, built, () => `${formatImageRef(ref)} = ${built.reference}\n${opts.driver} component: ${built.bundle.files.length} files, ${formatBytes(built.layer.size)} (entry ${built.bundle.entry})`);
        return;
      }
      if (opts.template === undefined) throw new ShoalError('invalid', '--template is required (or --driver isolate|wasm for a component image)', { field: 'template' });
      const template = parseImageRef(opts.template, 'template');
      const cmd = parseCommand(opts.cmd, 'cmd');
      const entrypoint = parseCommand(opts.entrypoint, 'entrypoint');
      const owner = parseOwner(opts.owner) ?? (opts.wholeRoot ? undefined : { uid: 0, gid: 0 });
      const { buildImage, buildServiceImage } = await import('../../image/index.ts');
      const { stat } = await import('node:fs/promises');
      const found = await stat(dir).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') throw new ShoalError('not-found', `${dir}: no such file or directory`, { field: 'path' });
        throw e;
      });
      const isEntry = found.isFile();
      if (isEntry && (opts.wholeRoot || cmd || entrypoint || opts.workdir)) {
        throw new ShoalError('invalid', 'a service entry sets its own command and root; --whole-root, --cmd, --entrypoint and --workdir apply to directories', { field: 'path' });
      }
      const result = isEntry
        ? await buildServiceImage({ client: await client(opts), entry: dir, template, ref, ...(owner ? { owner } : {}), ...(opts.env ? { env: opts.env } : {}) })
        : await buildImage({
        client: await client(opts),
        source: dir,
        template,
        ref,
        wholeRoot: opts.wholeRoot ?? false,
        ...(owner ? { owner } : {}),
        process: {
          ...(cmd ? { cmd } : {}),
          ...(entrypoint ? { entrypoint } : {}),
          ...(opts.env ? { env: opts.env } : {}),
          ...(opts.workdir ? { workdir: opts.workdir } : {}),
          ...(opts.user ? { user: opts.user } : {}),
        },
      });
      const pct = (100 * result.layer.size) / result.imageSize;
      printResult(opts, result, () =>
        [
          `${formatImageRef(ref)} = ${result.reference}`,
          `overlay ${formatBytes(result.layer.size)} (${result.layer.entries} entries, ${result.layer.whiteouts} whiteouts) of ${formatBytes(result.imageSize)} image: ${pct < 0.1 ? pct.toPrecision(2) : pct.toFixed(2)}%`,
        ].join('\n'),
      );
    },
  );

  withStoreOption(
    image
      .command('import <path>')
      .description('import a `docker save` archive, an OCI archive or an OCI layout folder')
      .requiredOption('--tag <name:tag>', 'name of the imported image'),
  ).action(async (path: string, opts: { store?: string; json?: boolean; tag: string }) => {
    const ref = parseImageRef(opts.tag, 'tag');
    const { importImage } = await import('../../image/index.ts');
    const progress = createProgress(`importing ${formatImageRef(ref)}`, !opts.json && process.stderr.isTTY === true);
    const result = await importImage(path, { client: await client(opts), ref }, {
      onProgress: (p) => progress.update(p.bytes, p.total),
    });
    progress.done();
    printResult(opts, result, () => `${formatImageRef(ref)} = ${ref.repository}@${result.manifestDigest} (${result.format}, ${result.layers} layers, ${formatBytes(result.bytes)})`);
  });

  withStoreOption(
    image
      .command('export <ref> <output>')
      .description('export an image as an OCI archive (default), an OCI layout folder or a docker archive')
      .option('--format <format>', 'oci-archive | oci-layout | docker-archive', 'oci-archive'),
  ).action(async (refText: string, output: string, opts: { store?: string; json?: boolean; format: string }) => {
    const formats = ['oci-archive', 'oci-layout', 'docker-archive'] as const;
    const format = formats.find((f) => f === opts.format);
    if (!format) throw new ShoalError('invalid', `--format must be one of ${formats.join(', ')}`, { field: 'format' });
    const ref = parseImageRef(refText);
    const { exportImage } = await import('../../image/index.ts');
    const result = await exportImage({ client: await client(opts), ref }, output, { format });
    printResult(opts, result, () => `${formatImageRef(ref)} (${result.manifestDigest}) → ${output} (${format}, ${formatBytes(result.bytes)})`);
  });

  withStoreOption(image.command('ls').description('list images: repositories, tags, digests and sizes')).action(
    async (opts: { store?: string; json?: boolean }) => {
      const { listImages } = await import('../../image/index.ts');
      const images = await listImages(await client(opts));
      printResult(opts, images, () =>
        table(
          ['NAME', 'TAG', 'DIGEST', 'SIZE'],
          images.map((i) => [i.name, i.tag, i.digest.slice(0, 19), formatBytes(i.size)]),
        ),
      );
    },
  );

  withStoreOption(image.command('inspect <ref>').description('show an image: manifest digest, config, layers')).action(
    async (refText: string, opts: { store?: string; json?: boolean }) => {
      const { inspectImage } = await import('../../image/index.ts');
      const info = await inspectImage(await client(opts), parseImageRef(refText));
      printResult(opts, info, () =>
        [
          `name     ${refText}`,
          `digest   ${info.digest}`,
          `type     ${info.mediaType}`,
          `command  ${JSON.stringify([...(info.process.entrypoint ?? []), ...(info.process.cmd ?? [])])}`,
          `workdir  ${info.process.workdir ?? '/'}`,
          `env      ${(info.process.env ?? []).join(' ')}`,
          `size     ${formatBytes(info.size)} in ${info.layers.length} layers`,
          ...info.layers.map((l, i) => `  layer ${i}  ${l.digest}  ${formatBytes(l.size)}`),
        ].join('\n'),
      );
    },
  );

  withStoreOption(image.command('tag <source> <target>').description('give an image another name (same digest)')).action(
    async (source: string, target: string, opts: { store?: string; json?: boolean }) => {
      const { tagImage } = await import('../../image/index.ts');
      const digest = await tagImage(await client(opts), parseImageRef(source, 'source'), parseImageRef(target, 'target'));
      printResult(opts, { source, target, digest }, () => `${target} = ${digest}`);
    },
  );

  withStoreOption(image.command('rm <ref>').description('remove a tag (or, by digest, the manifest and its tags)')).action(
    async (refText: string, opts: { store?: string; json?: boolean }) => {
      const ref = parseImageRef(refText);
      const c = await client(opts);
      await c.deleteManifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
      printResult(opts, { removed: refText }, () => `removed ${refText}`);
    },
  );

  withStoreOption(image.command('gc').description('remove blobs that no tag or manifest reaches')).action(
    async (opts: { store?: string; json?: boolean; token?: string }) => {
      const { requestGc } = await import('../../image/index.ts');
      const token = resolveToken(opts);
      const result = await requestGc(storeUrl(opts), token === undefined ? {} : { token });
      printResult(opts, result, () => `removed ${result.removedBlobs} blobs, freed ${formatBytes(result.freedBytes)}`);
    },
  );
}
