// `npm run bench`: every benchmark, one run, figures printed and written to
// bench/report.md. Each compares Shoal with a baseline or a peer measured in the same
// run, because these machines are noisy: read the ratios, not the absolute times.
//   SHOAL_BENCH_ONLY=pull,store,overlay,forwarding,host-start,provider,faults,compose,validation,slow-clients   run a subset
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRegistryClient, debootstrapRootfs } from '../src/image/index.ts';
import { echoOverlayRow, nginxOverlayRow, pushDebianTemplate, type OverlayRow } from './overlay-sizes.ts';
import { runPullBench, startStoreProcess, type PullBenchResult } from './pull.ts';
import { formatStoreBench, runStoreBench } from './store.ts';
import { formatForwardingBench, runForwardingBench } from './forwarding.ts';
import { formatHostDeployBench, runHostDeployBench } from './host-deploy.ts';
import { formatHostStartBench, runHostStartBench } from './host-start.ts';
import { formatProviderBench, runProviderBench } from './provider.ts';
import { formatFaultsBench, runFaultsBench } from './faults.ts';
import { formatComposeBench, runComposeBench } from './compose.ts';
import { formatValidationBench, runValidationBench } from './validation.ts';
import { formatSlowClientsBench, runSlowClientsBench } from './slow-clients.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const only = process.env.SHOAL_BENCH_ONLY?.split(',').map((s) => s.trim());
const wanted = (name: string) => !only || only.includes(name);
const sections: string[] = [];
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const mb = (n: number) => (n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(2)} MB`);
const pct = (x: number) => `${(100 * x).toFixed(x < 0.001 ? 4 : 2)} %`;

function overlayTable(rows: OverlayRow[]): string {
  return [
    '| service | template | overlay (gzip) | whole image (gzip) | proportion | overlay (unpacked) | whole image (unpacked) | proportion | entries | whiteouts |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.service} | ${r.template} | ${mb(r.overlayBytes)} | ${mb(r.imageBytes)} | ${pct(r.proportion)} | ${mb(r.overlayUncompressedBytes)} | ${mb(r.imageUncompressedBytes)} | ${pct(r.proportionUncompressed)} | ${r.entries} | ${r.whiteouts} |`,
    ),
  ].join('\n');
}

function pullTable(r: PullBenchResult): string {
  const runs = (s: PullBenchResult['shoal']) => s.runs.map((x) => x.mbps.toFixed(0)).join(', ');
  return [
    `Image ${r.ref}: ${mb(r.bytes)} in ${r.blobs} blobs; Shoal concurrency ${r.concurrency}; store in its own process on loopback.`,
    '',
    '| client | runs (MB/s) | median MB/s | median s |',
    '|---|---|---|---|',
    `| shoal pullImage | ${runs(r.shoal)} | ${r.shoal.medianMBps.toFixed(1)} | ${r.shoal.medianSeconds.toFixed(2)} |`,
    r.skopeo ? `| skopeo copy | ${runs(r.skopeo)} | ${r.skopeo.medianMBps.toFixed(1)} | ${r.skopeo.medianSeconds.toFixed(2)} |` : '| skopeo | not installed | | |',
    '',
    `**Ratio shoal / skopeo: ${r.ratio === undefined ? 'n/a' : r.ratio.toFixed(2)}** (goal ≥ 1.0)${r.sameManifest === false ? ' — warning: skopeo pulled a different manifest' : ''}`,
  ].join('\n');
}

async function main() {
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'shoal-bench-'));
  const store = await startStoreProcess(join(work, 'store'));
  const client = createRegistryClient({ baseUrl: store.url });
  try {
    const overlayRows: OverlayRow[] = [];
    if (wanted('overlay')) {
      log('overlay: echo on template://node');
      overlayRows.push(await echoOverlayRow(client));
    }
    if (wanted('overlay') || wanted('pull')) {
      // The Debian tree is kept under bench/out/ between runs (debootstrap takes ~30 s+).
      const cached = join(HERE, 'out', 'debian-rootfs');
      if (!(await stat(join(cached, 'etc/debian_version')).catch(() => undefined))) {
        log('debootstrap bookworm (kept in bench/out/ for the next run)');
        await mkdir(join(HERE, 'out'), { recursive: true });
        await rm(cached, { recursive: true, force: true });
        await debootstrapRootfs(cached, { log: () => undefined });
      }
      log('pushing template://debian/bookworm');
      await pushDebianTemplate(client, cached);
      if (wanted('overlay')) {
        log('overlay: nginx on template://debian/bookworm');
        overlayRows.push(await nginxOverlayRow(client, cached));
      }
    }
    if (overlayRows.length) {
      sections.push(`## Overlay size (XenoServer Table 1)\n\n${overlayTable(overlayRows)}\n\nThe paper's Apache overlay was 1 % of its file system.`);
      console.log(sections.at(-1));
    }
    if (wanted('pull')) {
      log('pull: shoal vs skopeo, template://debian/bookworm');
      const r = await runPullBench({ storeUrl: store.url, ref: 'template://debian/bookworm', runs: 5, log });
      sections.push(`## Pull throughput: Shoal's client vs skopeo, same store, same run\n\n${pullTable(r)}`);
      console.log(sections.at(-1));
    }
  } finally {
    await store.stop();
  }
  if (wanted('store')) {
    log('store: push and pull of template://node through skopeo, shoal store vs docker-registry');
    const r = await runStoreBench({ runs: 5, log });
    sections.push(`## Store push and pull: Shoal's store vs the reference registry (docker-registry)\n\n${formatStoreBench(r)}`);
    console.log(sections.at(-1));
  }
  if (wanted('forwarding')) {
    log('forwarding: direct vs host forwarder vs nginx');
    const r = await runForwardingBench();
    sections.push(`## Forwarding overhead (host data plane)\n\n${formatForwardingBench(r)}`);
    console.log(sections.at(-1));
  }
  if (wanted('host-start')) {
    log('host-start: plan → ready on a warm cache vs plain node');
    const r = await runHostDeployBench({ log });
    sections.push(`## Cold start on a warm layer cache (host)\n\n${formatHostDeployBench(r)}`);
    console.log(sections.at(-1));
    log('host-start: driver-level start variants');
    const d = await runHostStartBench({ log });
    sections.push(`## Start variants of the drivers (no host agent)\n\n${formatHostStartBench(d)}`);
    console.log(sections.at(-1));
  }
  if (wanted('provider')) {
    log('provider: cold share, warm path vs direct and nginx, deploy to 1/4/8 hosts');
    const r = await runProviderBench({ log });
    sections.push(`## Provider\n\n${formatProviderBench(r)}`);
    console.log(sections.at(-1));
  }
  if (wanted('faults')) {
    log('faults: kill -9 of an up process and restart; kill -9 of one of three hosts (under load)');
    const r = await runFaultsBench();
    sections.push(`## Faults: outage and outcomes\n\n${formatFaultsBench(r)}`);
    console.log(sections.at(-1));
  }
  if (wanted('compose')) {
    log('compose: added latency per intermediary hop');
    const r = await runComposeBench({ log });
    sections.push(`## Composition: added latency per intermediary hop\n\n${formatComposeBench(r)}`);
    console.log(sections.at(-1));
  }
  if (wanted('validation')) {
    log('validation: message-path cost of the input check');
    sections.push(`## Message validation: old checker vs Ajv vs TypeBox\n\n${formatValidationBench(await runValidationBench())}`);
    console.log(sections.at(-1));
  }
  if (wanted('slow-clients')) {
    log('slow-clients: 20,000 half-sent requests from one client, and everyone else');
    const rows = await runSlowClientsBench({ connections: 20_000, log });
    sections.push(`## Slow and many connections\n\n${formatSlowClientsBench(rows, 20_000)}`);
    console.log(sections.at(-1));
  }
  await rm(work, { recursive: true, force: true });

  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  const header = [
    '# Shoal benchmark report',
    '',
    `Written by \`npm run bench\` on ${new Date().toISOString()} in ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    `Machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}.`,
    'Figures from one run; compare the ratios (Shoal vs a baseline or peer measured in the same run), not absolute times.',
  ].join('\n');
  const out = only ? join(HERE, 'out', `report-${only.join('-')}.md`) : join(HERE, 'report.md');
  await mkdir(join(HERE, 'out'), { recursive: true });
  await writeFile(out, `${header}\n\n${sections.join('\n\n')}\n`);
  log(`report written to ${out}`);
}

await main();
