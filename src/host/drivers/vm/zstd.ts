// zstd as its own process for a saved state's RAM, both ways. Node's zstd goes through the
// thread pool 1 MiB at a time and back through the event loop: compressing a capture's
// ~130 MiB took ~1.2 s (QEMU's send waited on it) and decompressing it ~0.6 s of a resume
// while QEMU started beside it. The CLI takes ~0.4 s (two threads) and ~0.3 s, and writes
// its output itself. The kernel bounds what it writes (prlimit's RLIMIT_FSIZE: SIGXFSZ past
// the bound), so a small input that decompresses without end cannot fill the disk.
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { ShoalError } from '../../../protocol/index.ts';

/** What a capture compresses at: zstd's default level, on two threads whatever the host's size. */
const COMPRESS_ARGS = ['-3', '-T2'];

/** Decompresses `from` (a saved state's entry) into a new 0600 file at `path`, at most `maxBytes`. */
export async function decompressTo(from: AsyncIterable<unknown>, path: string, maxBytes: number, name: string): Promise<void> {
  const result = await runZstd(['-d'], from, path, maxBytes);
  if (result.signal === 'SIGXFSZ') throw new ShoalError('invalid', `${name} in the vm state decompresses to more than ${maxBytes} bytes`, { field: 'state' });
  // zstd's own refusal of its input (not zstd, truncated, a window past its memory limit).
  if (result.code === 1) throw new ShoalError('invalid', `${name} in the vm state is not zstd: ${result.stderr || 'zstd refused it'}`, { field: 'state' });
  if (result.code !== 0) throw new ShoalError('internal', `decompressing ${name} failed: zstd ended with ${result.code ?? result.signal}${result.stderr ? `: ${result.stderr}` : ''}`);
  if (result.feedError) throw result.feedError;
}

/**
 * Compresses what arrives on `socket` (QEMU's migration stream) into a new 0600 file at
 * `path`, at most `maxBytes`. The socket is zstd's stdin (a socket made with pauseOnConnect,
 * so Node never reads from it): the stream does not pass through this process. `signal`
 * ends zstd (a capture that failed, or a stranger holding the connection open).
 */
export async function compressFrom(socket: Socket, path: string, maxBytes: number, signal?: AbortSignal): Promise<void> {
  const result = await runZstd(COMPRESS_ARGS, socket, path, maxBytes, signal);
  if (result.signal === 'SIGXFSZ') throw new ShoalError('internal', `the VM's memory compressed to more than ${maxBytes} bytes`);
  if (result.code !== 0) throw new ShoalError('internal', `compressing the VM's memory failed: ${result.stderr || `zstd ended with ${result.code ?? result.signal}`}`);
}

interface ZstdResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Feeding stdin from an iterable failed (EPIPE when zstd ended early: its exit says why). */
  feedError?: Error;
}

const MISSING = 'the zstd and prlimit commands are needed (scripts/setup-system.sh installs them)';

async function runZstd(args: string[], input: AsyncIterable<unknown> | Socket, path: string, maxBytes: number, signal?: AbortSignal): Promise<ZstdResult> {
  const out = await open(path, 'w', 0o600);
  try {
    const direct = isSocket(input);
    // --core=0: a tenant's decompression bomb ends zstd by SIGXFSZ, which would dump core.
    const child = spawn('prlimit', [`--fsize=${maxBytes}`, '--core=0', '--', 'zstd', '-q', '-c', ...args], {
      stdio: [direct ? input : 'pipe', out.fd, 'pipe'],
      ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}),
    });
    // zstd has its own copy of the socket now.
    if (direct) input.destroy();
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => void (stderr.length < 2048 && (stderr += c.toString())));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
      child.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new ShoalError('unavailable', MISSING) : e));
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    const fed = direct || !child.stdin ? Promise.resolve(undefined) : pipeline(input, child.stdin).then(() => undefined, (e: unknown) => e as Error);
    const [{ code, signal: ended }, feedError] = await Promise.all([exited, fed]);
    // prlimit's exit when it cannot run zstd.
    if (code === 126 || code === 127) throw new ShoalError('unavailable', `${MISSING}: ${stderr.trim()}`);
    return { code, signal: ended, stderr: stderr.trim(), ...(feedError ? { feedError } : {}) };
  } finally {
    await out.close();
  }
}

function isSocket(input: AsyncIterable<unknown> | Socket): input is Socket {
  return typeof (input as Socket).setNoDelay === 'function';
}
