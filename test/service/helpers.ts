// Shared by the service tests: temp dirs short enough for socket paths (sun_path is 108 bytes).
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'shoal-svc-'));
}
