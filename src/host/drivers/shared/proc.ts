// /proc readers and exit watching shared by the drivers.
import { constants as fsConstants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { constants } from 'node:os';

export interface ProcStat {
  /** R, S, D, T (stopped), t, Z (zombie), X … */
  state: string;
  ppid: number;
  pgrp: number;
  /** Clock ticks since boot; with the pid it names one process across pid reuse. */
  startTime: number;
  utimeTicks: number;
  stimeTicks: number;
}

/** /proc/<pid>/stat, or undefined when there is no such process. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const num = (i: number): number => Number(rest[i]);
  return { state: rest[0] ?? '?', ppid: num(1), pgrp: num(2), utimeTicks: num(11), stimeTicks: num(12), startTime: num(19) };
}

/** True while `pid` is the process that started at `startTime` and has not exited. */
export async function isAlive(pid: number, startTime: number | undefined): Promise<boolean> {
  const st = await readProcStat(pid);
  if (st === undefined || st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.startTime === startTime;
}

/** Linux's USER_HZ is 100 on every architecture Node supports. */
export const NANOS_PER_TICK = 10_000_000;

/** A field of /proc/<pid>/status, e.g. VmRSS or Threads. */
export async function readStatusField(pid: number, field: string): Promise<string | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  } catch {
    return undefined;
  }
}

/**
 * Polls until the process is gone (or a zombie, or its pid reused), then calls onExit once.
 * Used for processes that are not our children (re-attached after an agent restart).
 */
export function watchExit(pid: number, startTime: number | undefined, onExit: () => void, intervalMs = 250): () => void {
  let stopped = false;
  const timer = setInterval(() => {
    void isAlive(pid, startTime).then((alive) => {
      if (alive || stopped) return;
      stopped = true;
      clearInterval(timer);
      onExit();
    });
  }, intervalMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/** 'SIGKILL' for 9, undefined for numbers that name no signal. */
export function signalName(n: number): string | undefined {
  for (const [name, num] of Object.entries(constants.signals)) if (num === n) return name;
  return undefined;
}

/** kill(2) that treats "no such process" as done. */
export function sendSignal(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with the promise's value, or with `undefined` after `ms`. */
export async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An executable named `name` on $PATH, or undefined. */
export async function findOnPath(name: string, pathVar = process.env.PATH ?? ''): Promise<string | undefined> {
  for (const dir of pathVar.split(':')) {
    if (!dir) continue;
    try {
      await access(join(dir, name), fsConstants.X_OK);
      return join(dir, name);
    } catch {
      // next
    }
  }
  return undefined;
}
