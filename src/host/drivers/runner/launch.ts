// Starts a runner: a long-lived Node process that hosts many lightweight instances (V8
// isolates, wasm modules) and talks to its driver over a Node IPC channel, through which
// the driver also hands it each instance's host-made listening socket (SCM_RIGHTS).
//
// Confinement 'runc': the runner is a runc container of its own, built with the runc
// driver's config (src/host/drivers/runc/spec.ts: no capabilities, seccomp, its own pid,
// ipc, uts, mount and network namespaces with only lo, a cgroup with memory/cpu/pids
// limits, no_new_privs), whose root is an empty read-only directory plus read-only binds
// of exactly what the runner needs: the node binary's directory, the system libraries
// it links, and the runner's code. `runc run` stays in the foreground as the runner's
// parent; the IPC channel is fd 3, passed in with --preserve-fds and named by
// NODE_CHANNEL_FD, so the driver's ChildProcess talks to the runner itself.
//
// Confinement 'process' (no runc, or not root: a developer machine): a plain child
// process with the same channel, no isolation of its own. The driver says so in its
// fingerprint.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ShoalError } from '../../../protocol/index.ts';
import type { InstanceResources } from '../driver.ts';
import { buildRuntimeSpec } from '../runc/index.ts';
import { openCappedLog } from '../shared/capped-log.ts';
import { sendSignal, within } from '../shared/proc.ts';

export type Confinement = 'runc' | 'process';

export interface RunnerBind {
  /** Host path (file or directory), bound read-only. */
  source: string;
  /** Where the runner sees it. */
  destination: string;
}

export interface RunnerLaunchOptions {
  /** The runner's id (a runc container id: [A-Za-z0-9_.-]). */
  id: string;
  confinement: Confinement;
  /** The program inside the runner's root: [node, ...flags, script]. */
  args: string[];
  env: string[];
  /** What the runner reads (with 'runc': its whole world besides node and the libraries). */
  binds: RunnerBind[];
  /** Limits of the whole runner (all its instances together). */
  resources: InstanceResources;
  /** The runner's stdout and stderr. */
  logFile: string;
  /** Host-owned scratch dir of this runner (bundle, empty root). */
  stateDir: string;
  /** runc's --root (confinement 'runc'). */
  runcRoot?: string;
  /** cgroup path of the runner (confinement 'runc'), e.g. shoal/runner-<id>. */
  cgroupsPath?: string;
  /** uid:gid the runner runs as (default nobody). */
  user?: { uid: number; gid: number };
}

export interface RunnerProcess {
  readonly id: string;
  readonly confinement: Confinement;
  /** The child holding the IPC channel (`runc run`, or the runner itself). */
  readonly child: ChildProcess;
  /** Resolves once the runner has gone, with what ended it. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Ends the runner (and so every instance in it). */
  kill(): Promise<void>;
}

/** The runner's paths inside its root (confinement 'runc'). */
export const NODE_DIR_INSIDE = '/shoal/node';

/** The node binary this host runs, as the runner will run it (inside its root or on the host). */
export function nodeBinary(confinement: Confinement): string {
  return confinement === 'runc' ? `${NODE_DIR_INSIDE}/node` : process.execPath;
}

/** Descriptors a runner may hold (its instances' listeners and connections). */
const RUNNER_NOFILE = 65536;

/** This process's hard limit on descriptors (a runner cannot be given more without CAP_SYS_RESOURCE). */
function hardNofile(): number {
  const m = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m ? Number(m[1]) : 1024;
}

/** Host directories holding the libraries node links against (read-only in the runner). */
const LIBRARY_DIRS = ['/lib', '/lib64', '/usr/lib', '/usr/lib64'];

export async function launchRunner(o: RunnerLaunchOptions): Promise<RunnerProcess> {
  await mkdir(o.stateDir, { recursive: true });
  let child: ChildProcess;
  try {
    if (o.confinement === 'runc') {
      if (!o.runcRoot || !o.cgroupsPath) throw new ShoalError('internal', 'launchRunner: runc confinement needs runcRoot and cgroupsPath');
      const bundle = join(o.stateDir, 'bundle');
      await writeRuncBundle(o, bundle);
      child = spawn('runc', ['--root', o.runcRoot, 'run', '--preserve-fds', '1', '--bundle', bundle, o.id], {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      });
    } else {
      const env = Object.fromEntries(o.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const [program, ...args] = o.args.map((a) => hostPathOf(a, o.binds));
      child = spawn(program as string, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], env, detached: true });
    }
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (e) {
    throw new ShoalError('unavailable', `starting runner ${o.id} (${o.confinement}) failed: ${(e as Error).message}`, { cause: e });
  }
  // A runner's own output (its instances' code runs in it) is capped like runc's shim log.
  // Runners end with the agent (their IPC channel closes), so the pipe outlives nothing.
  const log = openCappedLog(o.logFile);
  if (child.stdout) log.attach(child.stdout);
  if (child.stderr) log.attach(child.stderr);
  child.once('close', () => void log.close());
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    if (o.confinement === 'runc') {
      // runc's foreground parent forwards signals; a kill of the container ends it for sure.
      await new Promise<void>((resolve) => spawn('runc', ['--root', o.runcRoot as string, 'kill', o.id, 'KILL'], { stdio: 'ignore' }).once('exit', () => resolve()).once('error', () => resolve()));
    } else {
      sendSignal(-(child.pid as number), 'SIGKILL');
    }
    if ((await within(exited, 5000)) === undefined) sendSignal(child.pid as number, 'SIGKILL');
    await exited;
    if (o.confinement === 'runc') await deleteRunc(o.runcRoot as string, o.id);
  };
  return { id: o.id, confinement: o.confinement, child, exited, kill };
}

/** `runc delete --force`, done when there is nothing (a runner left by an earlier agent). */
export function deleteRunc(runcRoot: string, id: string): Promise<void> {
  return new Promise<void>((resolve) =>
    spawn('runc', ['--root', runcRoot, 'delete', '--force', id], { stdio: 'ignore' })
      .once('exit', () => resolve())
      .once('error', () => resolve()),
  );
}

/** With no root of its own, the runner reads its binds at their host paths. */
function hostPathOf(arg: string, binds: RunnerBind[]): string {
  if (arg === nodeBinary('runc')) return process.execPath;
  for (const b of binds) {
    if (arg === b.destination) return b.source;
    if (arg.startsWith(`${b.destination}/`)) return b.source + arg.slice(b.destination.length);
  }
  return arg;
}

async function writeRuncBundle(o: RunnerLaunchOptions, bundle: string): Promise<void> {
  await rm(bundle, { recursive: true, force: true });
  const root = join(bundle, 'root');
  const empty = join(bundle, 'no-imports');
  await mkdir(root, { recursive: true, mode: 0o755 });
  await mkdir(empty, { mode: 0o755 });
  const user = o.user ?? { uid: 65534, gid: 65534 };
  const config = buildRuntimeSpec(
    {
      id: o.id,
      rootfs: root,
      args: o.args,
      // The IPC channel is fd 3 (--preserve-fds 1); node opens it from NODE_CHANNEL_FD.
      env: [...o.env, 'NODE_CHANNEL_FD=3', 'NODE_CHANNEL_SERIALIZATION_MODE=json'],
      cwd: '/',
      user,
      resources: o.resources,
      listenSocket: '',
      importsDir: empty,
      logFile: o.logFile,
      stateDir: o.stateDir,
    },
    { cgroupsPath: o.cgroupsPath as string, seccomp: true },
  );
  // One runner holds every instance's listening socket and connections: more than the
  // 1024 descriptors an instance gets.
  const nofile = Math.min(RUNNER_NOFILE, hardNofile());
  config.process.rlimits = [{ type: 'RLIMIT_NOFILE', hard: nofile, soft: nofile }];
  // The runner's listener variables are not ours: the channel is not a listening socket.
  config.process.env = config.process.env.filter((kv) => !kv.startsWith('LISTEN_'));
  config.root = { path: root, readonly: true };
  // Only the runner's own binds: it has no imports dir and no /run/shoal of its own.
  config.mounts = config.mounts.filter((m) => m.destination !== '/run/shoal/imports' && m.destination !== '/run/shoal');
  const binds: RunnerBind[] = [{ source: dirname(realpathSync(process.execPath)), destination: NODE_DIR_INSIDE }, ...o.binds];
  for (const dir of LIBRARY_DIRS) {
    if (!existsSync(dir)) continue;
    const st = lstatSync(dir);
    // /lib → usr/lib on merged-/usr systems: the same link in the root, the target is bound.
    if (st.isSymbolicLink()) await symlink(readlinkSync(dir), join(root, dir));
    else binds.push({ source: dir, destination: dir });
  }
  for (const b of binds) {
    const isDir = lstatSync(b.source).isDirectory();
    const at = join(root, b.destination);
    await mkdir(isDir ? at : dirname(at), { recursive: true });
    if (!isDir) await writeFile(at, '');
    config.mounts.push({ destination: b.destination, type: 'bind', source: b.source, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  }
  for (const m of config.mounts) if (m.type !== 'bind') await mkdir(join(root, m.destination), { recursive: true });
  await writeFile(join(bundle, 'config.json'), JSON.stringify(config, null, 2));
}
