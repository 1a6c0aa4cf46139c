// `shoal call` of a warm message against curl sending the same message, in one
// interleaved run (round-robin over the variants, so machine load hits each alike), each
// run timed from spawn to exit. The variants show where the time goes:
//   curl                               the floor: one HTTP request from a small C program
//   shoal (Node 24 on PATH, dist/)     as the README says for a project: node_modules/.bin on PATH (its node is Node 24)
//   shoal (Node 24, src/ stripped)     the checkout before a build: Node strips the .ts at load
//   shoal (system node, dist/)         `npm link` in a checkout: the shebang finds the machine's older node; call runs on it, no re-exec
//   npx shoal                          npm's own start-up on top
// bin/shoal.js is run through its shebang in each shoal variant, as a linked bin is.
// `shoal up` runs in a child process with a state dir seeded from the cached echo store.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fig, type Figure } from './lib/figures.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const run = promisify(execFile);
const BODY = '{"message":"hello"}';

export interface CliCallVariant {
  name: string;
  command: string;
  samplesMs: number[];
  medianMs: number;
  p90Ms: number;
  /** Median CPU (user + sys) of the process tree, when GNU time is there. */
  cpuMedianMs: number | undefined;
}

export interface CliCallBench {
  runs: number;
  systemNode: string;
  variants: CliCallVariant[];
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** GNU time, when the machine has it: CPU time is what load does not inflate much, unlike wall time. */
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** One run: wall ms from spawn to exit, and the CPU ms (user + sys) it used when GNU time is there. */
function timeOnce(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ wallMs: number; cpuMs: number | undefined }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const [cmd, argv] = GNU_TIME === undefined ? [file, args] : [GNU_TIME, ['-f', 'cpu %U %S', file, ...args]];
    const child = spawn(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const m = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(err);
      if (code === 0) resolve({ wallMs, cpuMs: m === null ? undefined : (Number(m[1]) + Number(m[2])) * 1000 });
      else reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${err}`));
    });
  });
}

export async function runCliCallBench(options: { runs?: number; log?: (line: string) => void } = {}): Promise<CliCallBench> {
  const runs = options.runs ?? 30;
  const log = options.log ?? (() => undefined);
  const node24 = join(ROOT, 'node_modules/.bin/node');
  const bin = join(ROOT, 'bin/shoal.js');
  log('cli-call: building dist/ (npm run build), so shoal runs compiled where it can');
  await run(node24, [join(ROOT, 'scripts/package.js'), 'build'], { cwd: ROOT, maxBuffer: 16 << 20 });

  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-call-'));
  let up: ChildProcess | undefined;
  try {
    const { echoStoreDir } = await import('../test/provider/fixtures/echo-store.ts');
    await cp(await echoStoreDir(), join(dir, 'state/store'), { recursive: true });
    up = spawn(node24, [bin, 'up', '--listen', '127.0.0.1:0', '--data', join(dir, 'state'), '--json'], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, SHOAL_LOG_LEVEL: 'warn' } });
    const provider = await new Promise<string>((resolve, reject) => {
      let out = '';
      up!.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('\n')) resolve((JSON.parse(out.split('\n')[0]!) as { provider: string }).provider);
      });
      up!.once('exit', (code) => reject(new Error(`shoal up exited ${code}`)));
    });
    const url = `${provider}/s/echo/Echo`;
    // As the README says: node_modules/.bin first on PATH, so `shoal` and `node` are the project's.
    const onPath = { ...process.env, PATH: `${join(ROOT, 'node_modules/.bin')}:${process.env.PATH ?? ''}`, SHOAL_URL: provider, SHOAL_STATE: join(dir, 'state') };
    // The machine's PATH without any node_modules/.bin: `npm run bench` puts the project's
    // Node 24 first, which would make the "system node" row another Node 24 row.
    const machinePath = (process.env.PATH ?? '').split(':').filter((p) => !p.endsWith('node_modules/.bin')).join(':');
    const plain = { ...process.env, PATH: machinePath, SHOAL_URL: provider, SHOAL_STATE: join(dir, 'state') };
    const systemNode = (await run('node', ['--version'], { env: plain }).catch(() => ({ stdout: 'none' }))).stdout.trim();
    const callArgs = ['call', 'echo', 'Echo', BODY];
    const variants: Array<{ name: string; command: string; file: string; args: string[]; env: NodeJS.ProcessEnv }> = [
      { name: 'curl', command: `curl -s -H 'content-type: application/json' -d '${BODY}' URL`, file: 'curl', args: ['-s', '-o', '/dev/null', '-H', 'content-type: application/json', '-d', BODY, url], env: plain },
      { name: 'shoal (Node 24 on PATH, dist/)', command: `PATH=$PWD/node_modules/.bin:$PATH shoal call echo Echo '${BODY}'`, file: bin, args: callArgs, env: onPath },
      { name: 'shoal (Node 24, src/ stripped)', command: `node src/cli/main.ts call echo Echo '${BODY}'`, file: node24, args: [join(ROOT, 'src/cli/main.ts'), ...callArgs], env: onPath },
      { name: `shoal (system node ${systemNode}, dist/)`, command: `shoal call echo Echo '${BODY}' (after npm link: the shebang finds the system node)`, file: bin, args: callArgs, env: plain },
      { name: 'npx shoal', command: `npx shoal call echo Echo '${BODY}'`, file: 'npx', args: ['shoal', ...callArgs], env: plain },
    ];
    log('cli-call: warming up (the first message deploys echo)');
    for (const v of variants) await timeOnce(v.file, v.args, v.env);
    const samples = variants.map(() => [] as number[]);
    const cpu = variants.map(() => [] as number[]);
    log(`cli-call: ${runs} rounds over ${variants.length} variants`);
    for (let i = 0; i < runs; i++) {
      for (const [k, v] of variants.entries()) {
        const t = await timeOnce(v.file, v.args, v.env);
        samples[k]!.push(t.wallMs);
        if (t.cpuMs !== undefined) cpu[k]!.push(t.cpuMs);
      }
    }
    return {
      runs,
      systemNode,
      variants: variants.map((v, k) => ({
        name: v.name,
        command: v.command,
        samplesMs: samples[k]!,
        medianMs: quantile(samples[k]!, 0.5),
        p90Ms: quantile(samples[k]!, 0.9),
        cpuMedianMs: cpu[k]!.length === 0 ? undefined : quantile(cpu[k]!, 0.5),
      })),
    };
  } finally {
    if (up && up.exitCode === null) {
      up.kill('SIGINT');
      await new Promise((r) => up!.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatCliCallBench(r: CliCallBench): string {
  const curl = r.variants[0]!.medianMs;
  return [
    `A warm message to echo through \`shoal up\` on loopback; ${r.runs} interleaved rounds, each run timed from spawn to exit (curl's time is mostly the provider's and the instance's). Goal: \`shoal call\` as the README says within 150 ms. CPU is the client's user + sys (GNU time), which a loaded machine inflates far less than wall time.`,
    '',
    '| variant | command | median ms | p90 ms | × curl | CPU ms (median) |',
    '|---|---|---|---|---|---|',
    ...r.variants.map(
      (v) => `| ${v.name} | \`${v.command}\` | ${v.medianMs.toFixed(0)} | ${v.p90Ms.toFixed(0)} | ${(v.medianMs / curl).toFixed(1)} | ${v.cpuMedianMs === undefined ? 'n/a' : v.cpuMedianMs.toFixed(0)} |`,
    ),
  ].join('\n');
}

export function cliCallFigures(r: CliCallBench): Figure[] {
  const v = r.variants[1]!;
  return [
    fig('cli-call.shoal-median-ms', 'shoal call, Node 24 on PATH (dist/), median', v.medianMs, 'ms', 'lower', v.samplesMs),
    fig('cli-call.shoal-minus-curl-ms', 'shoal call minus curl, medians', v.medianMs - r.variants[0]!.medianMs, 'ms', 'lower'),
    ...(v.cpuMedianMs === undefined ? [] : [fig('cli-call.shoal-cpu-ms', 'shoal call CPU (user + sys), median', v.cpuMedianMs, 'ms', 'lower')]),
  ];
}

if (import.meta.main) {
  const r = await runCliCallBench({ runs: Number(process.env.SHOAL_BENCH_RUNS ?? 30), log: (l) => process.stderr.write(`[bench] ${l}\n`) });
  process.stdout.write(`${formatCliCallBench(r)}\n`);
}
