// Starts wasm runner processes (runner.ts), confined as far as this host allows without
// runc (the isolate helper's shared launcher in src/host/drivers/runner/ is meant to take
// over here). What a runner gets:
// - `node --permission`: no file writes, no child processes, no addons; reads only the
//   runner's own folder; WASI and one worker thread (the CPU watchdog) allowed;
// - `--wasm-max-mem-pages`: no linear memory can grow past the instance's memory limit;
// - as root (and with util-linux's unshare and setpriv): its own network, IPC and UTS
//   namespaces (no network at all) and uid/gid 65534 with no_new_privs;
// - an empty environment, stdin closed, stdout/stderr piped to the host (the instance log).
// Not (yet): a cgroup, seccomp, a mount or pid namespace.
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunnerToHost } from './runner-protocol.ts';

import { MODULE_EXT } from './launcher-ext.ts';
import { QUICKJS_PACKAGES, quickjsNodeModules } from './runner-files.ts';

export { MODULE_EXT } from './launcher-ext.ts';
const HERE = dirname(fileURLToPath(import.meta.url));
export const RUNNER_SCRIPT = join(HERE, `runner${MODULE_EXT}`);
const NOBODY = 65534;

export interface Confinement {
  /** unshare and setpriv paths when the host can use them (root), else undefined. */
  namespaces: { unshare: string; setpriv: string } | undefined;
  /** Where the runner's modules, Node and QuickJS are (reachable by uid 65534: runner-files.ts); default: in place. */
  files?: { dir: string; node: string; quickjs: string; ext: '.ts' | '.js' };
}

export function describeConfinement(c: Confinement): string {
  return c.namespaces
    ? 'runner: a child process in its own network/IPC/UTS namespaces as uid 65534 with no_new_privs, under node --permission (no file writes, no child processes); no cgroup, no seccomp (not runc yet)'
    : 'runner: a plain child process of the host user under node --permission (no file writes, no child processes); no namespaces (needs root with unshare and setpriv), no cgroup, no seccomp';
}

export interface Runner {
  readonly child: ChildProcess;
  /** The pages limit it was started with (a spare runner fits only an instance with the same limit). */
  readonly maxMemoryPages: number;
  /** Resolves when the runner has loaded and waits for its start message. */
  readonly spawned: Promise<void>;
}

/**
 * `spare`: the runner is started ahead of any instance, so it warms its HTTP path before it
 * says it is there; with `warmQuickJs` (the driver runs JS bundles) it also loads QuickJS
 * and runs a throwaway start, message, capture and restore (a few hundred ms of CPU, which
 * a host running only WASI modules should not pay for every spare). A runner started for a
 * start that is waiting does neither: a JS bundle loads QuickJS on arrival.
 */
export function launchRunner(options: { maxMemoryPages: number; confinement: Confinement; spare?: boolean; warmQuickJs?: boolean }): Runner {
  const dir = options.confinement.files?.dir ?? HERE;
  const node = options.confinement.files?.node ?? process.execPath;
  const quickjs = options.confinement.files?.quickjs ?? quickjsNodeModules();
  const nodeArgs = [
    '--permission',
    `--allow-fs-read=${dir}`,
    // QuickJS's packages, for JS components (their node_modules is not readable as a whole).
    ...QUICKJS_PACKAGES.map((p) => `--allow-fs-read=${join(quickjs, p)}`),
    '--allow-wasi',
    '--allow-worker',
    `--wasm-max-mem-pages=${options.maxMemoryPages}`,
    '--max-old-space-size=64',
    '--disable-warning=ExperimentalWarning',
    '--disable-warning=SecurityWarning',
    join(dir, `runner${options.confinement.files?.ext ?? MODULE_EXT}`),
    `--quickjs=${quickjs}`,
    ...(options.spare ? ['--spare'] : []),
    ...(options.spare && options.warmQuickJs ? ['--warm-quickjs'] : []),
  ];
  const ns = options.confinement.namespaces;
  const [program, args] = ns
    ? [ns.unshare, ['--net', '--ipc', '--uts', '--', ns.setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--no-new-privs', '--', node, ...nodeArgs]]
    : [node, nodeArgs];
  const child = spawn(program, args, {
    env: {},
    // Piped, not the log file: a spare runner starts before its instance (and log) exist.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    serialization: 'advanced',
    detached: true,
  });
  const spawned = new Promise<void>((resolve, reject) => {
    const onMessage = (m: RunnerToHost): void => {
      if (m.type !== 'spawned') return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve();
    };
    const onExit = (code: number | null, signal: string | null): void => reject(new Error(`the wasm runner exited while loading (code ${code}, signal ${signal})`));
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', reject);
  });
  spawned.catch(() => undefined); // observed by whoever takes the runner
  return { child, maxMemoryPages: options.maxMemoryPages, spawned };
}
