import type { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { formatBytes, printResult } from '../output.ts';
import { storeUrl, withStoreOption } from './common.ts';
import { resolveToken } from './credentials.ts';

export function registerTemplateCommands(program: Command): void {
  const template = program.command('template').description('build the well-known templates services are built on');

  withStoreOption(
    template
      .command('node')
      .description('build template://node/<major> from the Node.js runtime Shoal runs on (binary, libraries, minimal /etc)'),
  ).action(async (opts: { store?: string; json?: boolean; token?: string }) => {
    const { createRegistryClient, buildNodeTemplate } = await import('../../image/index.ts');
    const client = createRegistryClient({ baseUrl: storeUrl(opts), ...tokenOf(opts) });
    const result = await buildNodeTemplate({ client });
    printResult(opts, result, () => `${result.name} = ${result.reference}\nsize ${formatBytes(result.imageSize)} compressed, ${formatBytes(result.imageUncompressedSize)} unpacked`);
  });

  withStoreOption(
    template
      .command('debian')
      .description('build template://debian/<suite> with debootstrap from the Debian archive this machine uses')
      .option('--suite <name>', 'Debian suite', 'bookworm')
      .option('--mirror <url>', 'archive URL (default: the one apt is configured with)'),
  ).action(async (opts: { store?: string; json?: boolean; token?: string; suite: string; mirror?: string }) => {
    const { createRegistryClient, buildDebianTemplate } = await import('../../image/index.ts');
    const client = createRegistryClient({ baseUrl: storeUrl(opts), ...tokenOf(opts) });
    const work = await mkdtemp(join(tmpdir(), 'shoal-debian-'));
    try {
      const result = await buildDebianTemplate({
        client,
        suite: opts.suite,
        ...(opts.mirror ? { mirror: opts.mirror } : {}),
        workDir: work,
        log: opts.json ? undefined : (line) => process.stderr.write(`  ${line}\n`),
      });
      printResult(opts, result, () => `${result.name} = ${result.reference}\nsize ${formatBytes(result.imageSize)} compressed, ${formatBytes(result.imageUncompressedSize)} unpacked`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  withStoreOption(
    template
      .command('kernel')
      .description('build template://kernel/linux/<release> (for the vm driver) from the Debian kernel this machine\'s apt reaches: uncompressed, with a small initramfs')
      .option('--release <release>', 'kernel release, e.g. 6.1.0-57-amd64 (default: what linux-image-amd64 depends on)')
      .option('--data <dir>', "also install it in this host data dir's kernel cache (<dir>/vm/kernel/<release>)"),
  ).action(async (opts: { store?: string; json?: boolean; token?: string; release?: string; data?: string }) => {
    const { createRegistryClient, buildKernelTemplate } = await import('../../image/index.ts');
    const client = createRegistryClient({ baseUrl: storeUrl(opts), ...tokenOf(opts) });
    const data = opts.data;
    const result = await buildKernelTemplate({
      client,
      ...(opts.release ? { release: opts.release } : {}),
      ...(data ? { installDir: (release: string) => join(resolve(data), 'vm', 'kernel', release) } : {}),
      log: opts.json ? undefined : (line) => process.stderr.write(`  ${line}\n`),
    });
    printResult(opts, result, () =>
      `${result.name} = ${result.reference}\nsize ${formatBytes(result.imageSize)} compressed, ${formatBytes(result.imageUncompressedSize)} unpacked` +
      (data ? `\ninstalled in ${dirname(result.kernel.vmlinux)}` : ''),
    );
  });
}

function tokenOf(opts: { token?: string }): { token?: string } {
  const token = resolveToken(opts);
  return token === undefined ? {} : { token };
}
