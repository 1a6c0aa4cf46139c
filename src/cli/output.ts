// How every CLI command prints: human text by default, one JSON document with --json,
// errors on stderr with an exit code chosen by the error's category.
// The error module itself, not the protocol door: every command loads this file, and the
// door brings TypeBox and all the schemas (`shoal call` must start fast).
import { exitCodeFor, isShoalError } from '../protocol/errors.ts';

export interface OutputOptions {
  json?: boolean;
}

export function printResult(options: OutputOptions, value: unknown, human: () => string): void {
  if (options.json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else {
    const text = human();
    if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** A fixed-width table: columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** Reports an error the way the CLI promises: a message on stderr and a category exit code. */
export function reportError(error: unknown, json: boolean): number {
  if (isShoalError(error)) {
    if (json) process.stderr.write(JSON.stringify(error.toJSON()) + '\n');
    else process.stderr.write(`shoal: ${error.message}${error.field ? ` (field: ${error.field})` : ''}\n`);
    return exitCodeFor(error.code);
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`shoal: ${message}\n`);
  if (process.env.SHOAL_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  return 1;
}

/**
 * A progress line on stderr for transfers, redrawn in place on a terminal and silent
 * otherwise (or with --json), so scripts see clean output.
 */
export function createProgress(label: string, enabled = process.stderr.isTTY === true) {
  let last = 0;
  return {
    update(done: number, total: number | undefined): void {
      if (!enabled) return;
      const now = Date.now();
      if (now - last < 100 && (total === undefined || done < total)) return;
      last = now;
      const width = 30;
      const frac = total ? Math.min(1, done / total) : 0;
      const bar = total ? '#'.repeat(Math.round(frac * width)).padEnd(width, '.') : '';
      process.stderr.write(`\r${label} ${bar} ${formatBytes(done)}${total ? ` / ${formatBytes(total)}` : ''}   `);
    },
    done(): void {
      if (enabled) process.stderr.write('\n');
    },
  };
}
