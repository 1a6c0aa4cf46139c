// The messages between the isolate driver (in the host agent) and its runner process
// (runner.ts), over the runner's Node IPC channel. Only data crosses, plus one handle:
// the instance's host-made listening socket rides along with `start`.

/** Host → runner. */
export type ToRunner =
  | {
      t: 'start';
      seq: number;
      id: string;
      /** The entry module's path inside the image, e.g. /app/service.mjs. */
      entry: string;
      /** Every module file of the bundle, by its path inside the image (sent with a runner's first start). */
      modules?: Record<string, string>;
      env: Record<string, string>;
      /** The isolate's heap limit (isolated-vm `memoryLimit`, MiB). */
      memoryMb: number;
      /** CPU time one message (or timer callback) may run before the instance is ended. */
      messageCpuMs: number;
    }
  | { t: 'stop'; seq: number; id: string; graceMs: number }
  | { t: 'stats'; seq: number; id: string }
  | { t: 'import-reply'; seq: number; status: number; text: string }
  | { t: 'shutdown' };

export type ExitMessage = { t: 'exit'; id: string; reason: 'exited' | 'crashed' | 'oom' | 'killed'; code?: number; signal?: string; message?: string };

/** Runner → host. */
export type FromRunner =
  | { t: 'ready'; pid: number }
  | { t: 'reply'; seq: number; ok: true; memoryBytes?: number; cpuNanos?: number }
  | { t: 'reply'; seq: number; ok: false; message: string }
  | { t: 'log'; id: string; text: string }
  | { t: 'import'; seq: number; id: string; name: string; op: string; body: string }
  | ExitMessage;
