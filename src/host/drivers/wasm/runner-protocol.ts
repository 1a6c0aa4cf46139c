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
      /** A shoal/service program to run on QuickJS (the runner's own QuickJS module; `module` is then empty); absent: a WASI module. */
      bundle?: JsBundle;
      /** For a bundle: its libraries' evaluated state from an earlier start (serialized, uncompressed). */
      prelude?: Uint8Array;
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
  /** prelude: a bundle's libraries' state this start made (the host keeps it for the next start). */
  | { type: 'ready'; seq: number; prelude?: Uint8Array }
  | { type: 'captured'; seq: number; state: Uint8Array; memoryBytes: number; pages: number }
  | { type: 'failed'; seq: number | undefined; message: string }
  /** Sent just before the runner ends itself: the exit's reason. */
  | { type: 'exiting'; reason: 'oom' | 'crashed' | 'exited'; message: string };
