// Live states in the store (issue 13): a captured state is pushed as an OCI 1.1 artifact
// (artifactType application/vnd.shoal.state.v1, the empty config, the state file as its
// one layer, the driver's annotations) into shoal-state/<the image's repository> (deploy
// tokens only: it holds the service's memory), and
// named by its manifest digest; a plan's `from` pulls it back.
import { createHash } from 'node:crypto';

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createRegistryClient, type RegistryClient } from '../image/index.ts';
import type { CapturedState } from './drivers/driver.ts';
import { ShoalError, MediaType, parseImageRef, stateRepository, type Digest } from '../protocol/index.ts';

export const STATE_ARTIFACT_TYPE = 'application/vnd.shoal.state.v1';
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', bytes: Buffer.from('{}') };

export interface StateStore {
  /** Pushes the state next to `image` (a plan's image reference); answers the artifact's digest. */
  push(store: string, image: string, state: CapturedState, annotations: Record<string, string>): Promise<{ digest: Digest; size: number }>;
  /** Pulls the state artifact `digest` from next to `image` into a new file under `dir` (host-owned). */
  pull(store: string, image: string, digest: string, dir: string): Promise<CapturedState>;
}

export function createStateStore(options: { userAgent: string; token?: string; clientFor?: (store: string) => RegistryClient }): StateStore {
  const clients = new Map<string, RegistryClient>();
  const clientFor =
    options.clientFor ??
    ((store: string): RegistryClient => {
      let c = clients.get(store);
      if (!c) clients.set(store, (c = createRegistryClient({ baseUrl: store, userAgent: options.userAgent, ...(options.token === undefined ? {} : { token: options.token }) })));
      return c;
    });
  return {
    async push(store, image, state, annotations) {
      const client = clientFor(store);
      const repo = stateRepository(parseImageRef(image, 'image').repository);
      const bytes = await readFile(state.file);
      const digest = sha256(bytes);
      await client.pushBlob(repo, digest, bytes.length, () => Readable.from([bytes]));
      const configDigest = sha256(EMPTY_CONFIG.bytes);
      await client.pushBlob(repo, configDigest, EMPTY_CONFIG.bytes.length, () => Readable.from([EMPTY_CONFIG.bytes]));
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ociManifest,
          artifactType: STATE_ARTIFACT_TYPE,
          config: { mediaType: EMPTY_CONFIG.mediaType, digest: configDigest, size: EMPTY_CONFIG.bytes.length },
          layers: [{ mediaType: state.mediaType, digest, size: bytes.length }],
          annotations: { ...state.annotations, ...annotations },
        }),
      );
      const manifestDigest = await client.putManifest(repo, sha256(manifest), manifest, MediaType.ociManifest);
      return { digest: manifestDigest, size: bytes.length };
    },
    async pull(store, image, digest, dir) {
      const client = clientFor(store);
      const repo = stateRepository(parseImageRef(image, 'image').repository);
      const fetched = await client.getManifest(repo, digest, [MediaType.ociManifest]);
      if (!fetched) throw new ShoalError('not-found', `no state ${digest} in ${repo} at ${store}`, { field: 'from' });
      if (fetched.digest !== digest) throw new ShoalError('digest-mismatch', `the store answered ${fetched.digest} for state ${digest}`, { field: 'from' });
      const m = JSON.parse(fetched.bytes.toString('utf8')) as { artifactType?: string; layers?: Array<{ mediaType: string; digest: Digest; size: number }>; annotations?: Record<string, string> };
      const layer = m.layers?.[0];
      if (m.artifactType !== STATE_ARTIFACT_TYPE || !layer || m.layers!.length !== 1) throw new ShoalError('invalid', `${digest} is not a state artifact (${STATE_ARTIFACT_TYPE})`, { field: 'from' });
      const file = join(dir, `state-${layer.digest.slice(7, 23)}`);
      await client.downloadBlob(repo, layer.digest, file, { expectedSize: layer.size, durable: false });
      return { mediaType: layer.mediaType, file, annotations: m.annotations ?? {} };
    },
  };
}

function sha256(bytes: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

