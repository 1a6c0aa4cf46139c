// Waiting for the machine to go quiet between timed runs: a farm keeps working after a
// measured call returns (teardown, hosts pre-creating containers), and on a 2-CPU machine
// that work lands in whatever is timed next.
import { readFile } from 'node:fs/promises';

async function cpuTimes(): Promise<{ idle: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // idle + iowait count as idle
  return { idle: (f[3] ?? 0) + (f[4] ?? 0), total: f.reduce((a, b) => a + b, 0) };
}

/**
 * Resolves once the machine's CPUs were at least `idleFraction` idle for `windows`
 * consecutive windows of `windowMs`, or after `maxMs` (returns false then).
 */
export async function settle(options: { idleFraction?: number; windowMs?: number; windows?: number; maxMs?: number } = {}): Promise<boolean> {
  const { idleFraction = 0.85, windowMs = 100, windows = 2, maxMs = 10_000 } = options;
  const deadline = performance.now() + maxMs;
  let quiet = 0;
  let prev = await cpuTimes();
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, windowMs));
    const now = await cpuTimes();
    const total = now.total - prev.total;
    quiet = total > 0 && (now.idle - prev.idle) / total >= idleFraction ? quiet + 1 : 0;
    prev = now;
    if (quiet >= windows) return true;
  }
  return false;
}
