// Thin wrapper over the runc command line, always with our own `--root` so that our
// containers are separate from anyone else's on the machine.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ShoalError } from '../../../protocol/index.ts';

const run = promisify(execFile);

export type RuncStatus = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

export interface RuncState {
  id: string;
  pid: number;
  status: RuncStatus;
  bundle: string;
}

export interface RuncCli {
  readonly binary: string;
  readonly root: string;
  /** Arguments that every runc call starts with (binary excluded). */
  globalArgs(logFile?: string): string[];
  exec(args: string[]): Promise<string>;
  state(id: string): Promise<RuncState | undefined>;
  list(): Promise<RuncState[]>;
  start(id: string): Promise<void>;
  kill(id: string, signal: 'TERM' | 'KILL'): Promise<void>;
  /** `runc delete` (force: kill first; note runc then sleeps 100 ms). Missing → done. */
  delete(id: string, options?: { force?: boolean }): Promise<void>;
  pause(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  version(): Promise<string>;
}

export function isMissing(e: unknown): boolean {
  return e instanceof ShoalError && e.code === 'not-found';
}

export function createRuncCli(binary: string, root: string): RuncCli {
  const globalArgs = (logFile?: string): string[] =>
    ['--root', root, ...(logFile ? ['--log', logFile, '--log-format', 'json'] : [])];

  async function exec(args: string[]): Promise<string> {
    try {
      const { stdout } = await run(binary, [...globalArgs(), ...args], { maxBuffer: 16 * 1024 * 1024 });
      return stdout;
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
      if (/does not exist|not exist|no such file/i.test(stderr)) {
        throw new ShoalError('not-found', `runc ${args[0]}: ${stderr}`, { cause: e });
      }
      if (/not running|not paused|is paused|cannot|stopped/i.test(stderr)) {
        throw new ShoalError('conflict', `runc ${args[0]}: ${stderr}`, { cause: e });
      }
      throw new ShoalError('internal', `runc ${args.join(' ')} failed: ${stderr}`, { cause: e });
    }
  }

  return {
    binary,
    root,
    globalArgs,
    exec,
    async state(id) {
      try {
        return JSON.parse(await exec(['state', id])) as RuncState;
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    },
    async list() {
      // `runc list` prints "null" when there is nothing (and fails if the root is missing).
      try {
        return (JSON.parse(await exec(['list', '--format', 'json'])) as RuncState[] | null) ?? [];
      } catch (e) {
        if (isMissing(e)) return [];
        throw e;
      }
    },
    async start(id) {
      await exec(['start', id]);
    },
    async kill(id, signal) {
      await exec(['kill', id, signal]);
    },
    async delete(id, options = {}) {
      try {
        await exec(['delete', ...(options.force ? ['--force'] : []), id]);
      } catch (e) {
        if (!isMissing(e)) throw e;
      }
    },
    async pause(id) {
      await exec(['pause', id]);
    },
    async resume(id) {
      await exec(['resume', id]);
    },
    async version() {
      const { stdout } = await run(binary, ['--version']);
      return /runc version (\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0] ?? 'unknown';
    },
  };
}

/** The last error runc wrote to its JSON log (what went wrong in create/run). */
export async function lastRuncError(logFile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(logFile, 'utf8');
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const line of text.split('\n')) {
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' || entry.level === 'fatal') last = entry.msg;
    } catch {
      // not JSON
    }
  }
  return last;
}
