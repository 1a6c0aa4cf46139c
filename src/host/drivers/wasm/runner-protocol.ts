// The messages between the wasm driver (host side) and a runner (runner.ts), over the
// runner's IPC channel (Node's 'advanced' serialization, so byte arrays pass as they are).
// `seq` pairs a request with its answer.
import type { JsBundle } from './quickjs-engine.ts';

export type HostToRunner =
  | {
      type: 'start';
      seq: number;
      /** The module's bytes (read by the host from the image's root; QuickJS's own for a JS component). */
      module: Uint8Array;
      /** A shoal/service program to run on QuickJS (the module is then QuickJS); absent: a WASI module. */
      bundle?: JsBundle;
      maxMemoryBytes: number;
      /** Longest one call may run; 0: no limit. */
      cpuLimitMs: number;
      env: Record<string, string>;
      /** A state to continue from (restore, fork); compressed when it came from the store. */
      state?: Uint8Array;
      stateCompressed?: boolean;
    }
  | { type: 'capture'; seq: number; compress: boolean }
  | { type: 'stop' };

export type RunnerToHost =
  | { type: 'spawned' }
  | { type: 'ready'; seq: number }
  | { type: 'captured'; seq: number; state: Uint8Array; memoryBytes: number; pages: number }
  | { type: 'failed'; seq: number | undefined; message: string }
  /** Sent just before the runner ends itself: the exit's reason. */
  | { type: 'exiting'; reason: 'oom' | 'crashed' | 'exited'; message: string };
