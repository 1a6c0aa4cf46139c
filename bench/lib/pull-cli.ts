// One pull as its own process, as `skopeo copy` is: the pull bench starts this per run so
// both clients pay a process start, a fresh connection pool and a cold JIT alike.
//   node bench/lib/pull-cli.ts STORE_URL REF LAYOUT_DIR CONCURRENCY durable|no-fsync
// Prints {"manifestDigest","blobs","pullMs"} on stdout and exits at once, as a CLI would:
// left alone, the client's idle keep-alive connections (undici's 4 s) hold the process open.
import { createRegistryClient, pullImage } from '../../src/image/registry-client.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';

const [storeUrl, refText, layoutDir, concurrencyText, durability] = process.argv.slice(2);
if (storeUrl === undefined || refText === undefined || layoutDir === undefined || concurrencyText === undefined || (durability !== 'durable' && durability !== 'no-fsync')) {
  process.stderr.write('usage: node bench/lib/pull-cli.ts STORE_URL REF LAYOUT_DIR CONCURRENCY durable|no-fsync\n');
  process.exit(2);
}
const concurrency = Number(concurrencyText);
const client = createRegistryClient({ baseUrl: storeUrl, concurrency });
try {
  const t0 = performance.now();
  const r = await pullImage(client, parseImageRef(refText), { layoutDir }, { concurrency, durable: durability === 'durable' });
  const pullMs = performance.now() - t0;
  process.stdout.write(`${JSON.stringify({ manifestDigest: r.manifestDigest, blobs: r.blobs, pullMs })}\n`, () => process.exit(0));
} catch (e) {
  process.stderr.write(`pull ${refText} from ${storeUrl}: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
}
