// The standalone store's audit trail: one JSON line per mutating call, appended to a file
// (0600) in its data directory. Inside `shoal up` and the provider the registry keeps it.
import { appendFile } from 'node:fs/promises';
import type { NewAuditEntry } from '../registry/index.ts';

export function createFileAuditSink(path: string): (entry: NewAuditEntry) => Promise<void> {
  return (entry) => appendFile(path, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
}
