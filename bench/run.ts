// `npm run bench`: every benchmark, one run, figures printed and written to
// bench/report.md, with their numbers in bench/report.json for bench/compare.ts. Each
// compares Shoal with a baseline or a peer measured in the same run, because these
// machines are noisy: read the ratios, not the absolute times. The report records the
// commit, date, machine (and its load at start) and Node version, and under each section
// the command that produces it alone.
//   SHOAL_BENCH_ONLY=pull,store,overlay,forwarding,host-start,provider,warm-path,scale,faults,compose,validation,slow-clients,cli-call,components,wasm,activation,vm   run a subset
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRegistryClient, debootstrapRootfs } from '../src/image/index.ts';
import { echoOverlayRow, nginxOverlayRow, pushDebianTemplate, type OverlayRow } from './overlay-sizes.ts';
import { pullFigures, runPullBench, startStoreProcess, type PullBenchResult } from './pull.ts';
import { formatStoreBench, runStoreBench } from './store.ts';
import { formatForwardingBench, runForwardingBench } from './forwarding.ts';
import { formatHostDeployBench, hostDeployFigures, runHostDeployBench } from './host-deploy.ts';
import { formatHostStartBench, runHostStartBench } from './host-start.ts';
import { formatProviderBench, providerFigures, runProviderBench } from './provider.ts';
import { formatWarmPathBench, runWarmPathBench, warmPathFigures } from './warm-path.ts';
import { formatScaleBench, runScaleBench, scaleFigures } from './scale.ts';
import { composeFigures, formatComposeBench, runComposeBench } from './compose.ts';
import { formatFaultsBench, runFaultsBench } from './faults.ts';
import { formatValidationBench, runValidationBench } from './validation.ts';
import { formatSlowClientsBench, runSlowClientsBench } from './slow-clients.ts';
import { cliCallFigures, formatCliCallBench, runCliCallBench } from './cli-call.ts';
import { runWasmBench } from './wasm.ts';
import { formatComponentsBench, runComponentsBench } from './components.ts';
import { runComponentsProviderBench } from './components-provider.ts';
import { formatVmBench, runVmBench, vmFigures } from './vm.ts';
import { activationFigures, formatActivationBench, runActivationBench } from './activation.ts';
import { fig, type Figure, type ReportJson, type ReportSection } from './lib/figures.ts';
import { formatMeta, reportMeta } from './lib/report-meta.ts';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const only = process.env.SHOAL_BENCH_ONLY?.split(',').map((s) => s.trim());
const wanted = (name: string) => !only || only.includes(name);
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
    `Image ${r.ref}: ${mb(r.bytes)} in ${r.blobs} blobs; Shoal concurrency ${r.concurrency}; store in its own process on loopback. Both clients run as a new process per run (Shoal's: bench/lib/pull-cli.ts), timed from spawn to exit.`,
    '',
    '| client | runs (MB/s) | median MB/s | median s |',
    '|---|---|---|---|',
    `| shoal (pull-cli process) | ${runs(r.shoal)} | ${r.shoal.medianMBps.toFixed(1)} | ${r.shoal.medianSeconds.toFixed(2)} |`,
    r.skopeo ? `| skopeo copy | ${runs(r.skopeo)} | ${r.skopeo.medianMBps.toFixed(1)} | ${r.skopeo.medianSeconds.toFixed(2)} |` : '| skopeo | not installed | | |',
    '',
    `**Ratio shoal / skopeo: ${r.ratio === undefined ? 'n/a' : r.ratio.toFixed(2)}** (goal ≥ 1.0)${r.sameManifest === false ? ' — warning: skopeo pulled a different manifest' : ''}`,
  ].join('\n');
}

/** One section of the report: what `SHOAL_BENCH_ONLY=<name>` runs. */
interface Section {
  name: string;
  title: string;
  run(ctx: Context): Promise<{ text: string; figures?: Figure[] }>;
}

/** The store and the Debian template the image sections share, made on first use. */
interface Context {
  imageStore(): Promise<{ url: string; client: ReturnType<typeof createRegistryClient>; debian: string }>;
}

const SECTIONS: Section[] = [
  {
    name: 'wasm',
    title: 'wasm components: cold start, fork, snapshot size, capture/restore as memory grows',
    async run() {
      return runWasmBench({ log });
    },
  },
  {
    name: 'overlay',
    title: 'Overlay size (XenoServer Table 1)',
    async run(ctx) {
      const { client, debian } = await ctx.imageStore();
      log('overlay: echo on template://node');
      const rows = [await echoOverlayRow(client)];
      log('overlay: nginx on template://debian/bookworm');
      rows.push(await nginxOverlayRow(client, debian));
      return { text: `${overlayTable(rows)}\n\nThe paper's Apache overlay was 1 % of its file system.` };
    },
  },
  {
    name: 'pull',
    title: "Pull throughput: Shoal's client vs skopeo, same store, same run",
    async run(ctx) {
      const { url } = await ctx.imageStore();
      log('pull: shoal vs skopeo, template://debian/bookworm');
      const r = await runPullBench({ storeUrl: url, ref: 'template://debian/bookworm', runs: 5, log });
      return { text: pullTable(r), figures: pullFigures(r) };
    },
  },
  {
    name: 'store',
    title: "Store push and pull: Shoal's store vs the reference registry (docker-registry)",
    async run() {
      log('store: push and pull of template://node through skopeo, shoal store vs docker-registry');
      return { text: formatStoreBench(await runStoreBench({ runs: 5, log })) };
    },
  },
  {
    name: 'forwarding',
    title: 'Forwarding overhead (host data plane)',
    async run() {
      log('forwarding: direct vs host forwarder vs nginx');
      const r = await runForwardingBench();
      const figures: Figure[] = [fig('forwarding.added-p50-ms', 'forwarder p50 added over direct (32 conn)', r.loaded.forwarderAddedMs, 'ms', 'lower')];
      if (r.loaded.nginx !== undefined) figures.push(fig('forwarding.rps-vs-nginx', 'forwarder throughput × nginx (Node client)', r.loaded.forwarder.rps / r.loaded.nginx.rps, 'ratio', 'higher'));
      if (r.wrk.forwarder !== undefined && r.wrk.nginx !== undefined) figures.push(fig('forwarding.wrk-rps-vs-nginx', 'forwarder throughput × nginx (wrk)', r.wrk.forwarder.rps / r.wrk.nginx.rps, 'ratio', 'higher'));
      return { text: formatForwardingBench(r), figures };
    },
  },
  {
    name: 'host-start',
    title: 'Cold start on a warm layer cache (host)',
    async run() {
      log("host-start: plan → ready on a warm cache vs plain node (a service's first deployment, the same again, no pool)");
      const r = await runHostDeployBench({ log });
      log('host-start: driver-level start variants');
      const d = await runHostStartBench({ log });
      return {
        text: `${formatHostDeployBench(r)}\n\n### Start variants of the drivers (no host agent)\n\n${formatHostStartBench(d)}`,
        figures: hostDeployFigures(r),
      };
    },
  },
  {
    name: 'provider',
    title: 'Provider',
    async run() {
      // The warm path has its own section (warm-path: wrk, rounds, medians of per-round ratios).
      log('provider: cold share, deploy to 1/4/8 hosts');
      const r = await runProviderBench({ log, only: ['cold', 'spread'] });
      return { text: formatProviderBench(r), figures: providerFigures(r) };
    },
  },
  {
    name: 'warm-path',
    title: 'Warm path through the provider vs direct and nginx (wrk, interleaved rounds)',
    async run() {
      log('warm-path: direct, nginx, provider (in-process and HTTP link), forwarder; wrk, rotated rounds');
      const r = await runWarmPathBench({ log });
      return { text: formatWarmPathBench(r), figures: warmPathFigures(r) };
    },
  },
  {
    name: 'scale',
    title: 'Scale by simulation: the provider with 10, 100 and 1,000 simulated hosts',
    async run() {
      log('scale: simulated hosts, N deployments each; SQLite, and PostgreSQL when SHOAL_TEST_DATABASE_URL is set');
      const r = await runScaleBench({ log });
      const rows = [...r.rows];
      const notes = [...r.notes];
      const pg = process.env.SHOAL_TEST_DATABASE_URL;
      if (pg !== undefined) {
        const p = await runScaleBench({ log, postgresUrl: pg, hosts: [10, 100] });
        rows.push(...p.rows);
        notes.push(...p.notes);
      } else notes.push('SHOAL_TEST_DATABASE_URL unset: PostgreSQL not measured (scripts/start-postgres.sh prints it)');
      const all = { rows, notes };
      return { text: formatScaleBench(all), figures: scaleFigures(all) };
    },
  },
  {
    name: 'faults',
    title: 'Faults: outage and outcomes',
    async run() {
      log('faults: kill -9 of an up process and restart; kill -9 of one of three hosts (under load)');
      return { text: formatFaultsBench(await runFaultsBench()) };
    },
  },
  {
    name: 'compose',
    title: 'Composition: added latency per intermediary hop',
    async run() {
      log('compose: added latency per intermediary hop');
      const r = await runComposeBench({ log });
      return { text: formatComposeBench(r), figures: composeFigures(r) };
    },
  },
  {
    name: 'validation',
    title: 'Message validation: old checker vs Ajv vs TypeBox',
    async run() {
      log('validation: message-path cost of the input check');
      return { text: formatValidationBench(await runValidationBench()) };
    },
  },
  {
    name: 'slow-clients',
    title: 'Slow and many connections',
    async run() {
      log('slow-clients: 20,000 half-sent requests from one client, and everyone else');
      return { text: formatSlowClientsBench(await runSlowClientsBench({ connections: 20_000, log }), 20_000) };
    },
  },
  {
    name: 'cli-call',
    title: '`shoal call` vs curl: one warm message, CLI start-up included',
    async run() {
      log('cli-call: shoal call (as the README says, and the slower ways) vs curl, interleaved');
      const r = await runCliCallBench({ runs: 30, log });
      return { text: formatCliCallBench(r), figures: cliCallFigures(r) };
      },
    },
    {
    name: 'components',
    title: 'Components: echo on the process, runc, isolate and wasm (QuickJS) drivers (issue 13)',
    async run() {
      log('components: cold start, messages/s, isolate density');
      const drivers = formatComponentsBench(await runComponentsBench({ log }));
      const viaProvider = await runComponentsProviderBench({ log });
      const rows = Object.entries(viaProvider).map(([d, v]) => `| ${d} | ${v.toFixed(0)} |`);
      return { text: `${drivers}\n\nThrough the provider (16 concurrent callers, 3 s, one host offering every driver):\n\n| driver | messages/s |\n|---|---|\n${rows.join('\n')}` };
      },
    },
    {
    name: 'activation',
    title: 'First message after idleness by path (warm, restore, fork, cold) and the activator vs hindsight (issue 15)',
    async run() {
      log('activation: two counter components (WASI, QuickJS) on three wasm hosts');
      const r = await runActivationBench({ log });
      return { text: formatActivationBench(r), figures: activationFigures(r) };
    },
  },
  {
    name: 'vm',
    title: 'vm driver: cold boot vs resume from saved state (XenoServer), disk and memory per VM',
    async run() {
      log('vm: echo in QEMU, cold boot vs resume');
      const r = await runVmBench({ runs: 2, log });
      return { text: formatVmBench(r), figures: vmFigures(r) };
    },
  },
];

async function main() {
  const meta = await reportMeta(dirname(HERE));
  const started = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'shoal-bench-'));
  let store: Awaited<ReturnType<typeof startStoreProcess>> | undefined;
  let image: Awaited<ReturnType<Context['imageStore']>> | undefined;
  const ctx: Context = {
    async imageStore() {
      if (image !== undefined) return image;
      store = await startStoreProcess(join(work, 'store'));
      const client = createRegistryClient({ baseUrl: store.url });
      // The Debian tree is kept under bench/out/ between runs (debootstrap takes ~30 s+).
      const debian = join(HERE, 'out', 'debian-rootfs');
      if (!(await stat(join(debian, 'etc/debian_version')).catch(() => undefined))) {
        log('debootstrap bookworm (kept in bench/out/ for the next run)');
        await mkdir(join(HERE, 'out'), { recursive: true });
        await rm(debian, { recursive: true, force: true });
        await debootstrapRootfs(debian, { log: () => undefined });
      }
      log('pushing template://debian/bookworm');
      await pushDebianTemplate(client, debian);
      image = { url: store.url, client, debian };
      return image;
    },
  };
  const texts: string[] = [];
  const json: ReportSection[] = [];
  const failures: string[] = [];
  try {
    for (const s of SECTIONS.filter((x) => wanted(x.name))) {
      // Each section alone, as the report says it can be reproduced.
      const command = `SHOAL_BENCH_ONLY=${s.name} npm run bench`;
      // A section that fails is reported as failed and the run goes on: one broken
      // benchmark must not lose the figures of every other (the run still exits non-zero).
      let r: { text: string; figures?: Figure[] };
      try {
        r = await s.run(ctx);
      } catch (e) {
        failures.push(s.name);
        log(`${s.name}: FAILED: ${(e as Error).stack ?? String(e)}`);
        r = { text: `**This section failed in this run**: ${String((e as Error).message ?? e).slice(0, 500)}` };
      }
      texts.push(`## ${s.title}\n\n_Command: \`${command}\`_\n\n${r.text}`);
      json.push({ name: s.name, title: s.title, command, figures: r.figures ?? [] });
      console.log(texts.at(-1));
    }
  } finally {
    await store?.stop();
    await rm(work, { recursive: true, force: true });
  }
  meta.durationS = (Date.now() - started) / 1000;
  const header = [
    '# Shoal benchmark report',
    '',
    `Written by \`${only ? `SHOAL_BENCH_ONLY=${only.join(',')} ` : ''}npm run bench\`:`,
    '',
    formatMeta(meta),
    '',
    'Figures from one run; compare the ratios (Shoal vs a baseline or peer measured in the same run), not absolute times. `node bench/compare.ts OLD.json NEW.json` flags regressions between two runs.',
  ].join('\n');
  const base = only ? join(HERE, 'out', `report-${only.join('-')}`) : join(HERE, 'report');
  await mkdir(join(HERE, 'out'), { recursive: true });
  await writeFile(`${base}.md`, `${header}\n\n${texts.join('\n\n')}\n`);
  const report: ReportJson = { meta, sections: json };
  await writeFile(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  log(`report written to ${base}.md and ${base}.json`);
  if (failures.length > 0) {
    log(`sections that failed: ${failures.join(', ')}`);
    process.exitCode = 1;
  }
}

await main();
