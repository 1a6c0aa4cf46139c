// The service `shoal up` starts with on first run, so a new platform answers a call at
// once: echo, written against shoal/service like any service. It lives here, not in
// examples/, because the CLI ships and examples do not; examples/echo is the fuller
// example (with the probes the host's tests use).
import { fileURLToPath } from 'node:url';
import { defineService, toServiceDescription, Type } from '../../service/index.ts';

export const STARTER_IMAGE = 'echo:1';

/**
 * The program the starter image runs (bundled by src/image/sdk-bundle.ts, never imported
 * here): service.ts in the checkout, service.js in the published package (dist/).
 */
export const STARTER_ENTRY = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './service.ts' : './service.js', import.meta.url));

export const StarterEcho = defineService({
  name: 'echo',
  version: '1',
  description: 'The smallest Shoal service: replies with what it is sent (started by shoal up)',
  image: STARTER_IMAGE,
  operations: {
    Echo: {
      description: 'Replies with the same object',
      input: Type.Object({ message: Type.String() }),
      output: Type.Object({ message: Type.String() }),
      idempotent: true,
    },
    Inspect: {
      description: 'What the instance sees of itself: pid, hostname, uid, network interfaces, processes',
      input: Type.Object({}, { additionalProperties: false }),
      output: Type.Object({
        pid: Type.Integer(),
        hostname: Type.String(),
        uid: Type.Integer(),
        interfaces: Type.Array(Type.String()),
        processes: Type.Integer(),
      }),
      idempotent: true,
    },
  },
  resources: { memoryMb: 128, cpuMillis: 500, pids: 64 },
});

/** The JSON description the provider registers. */
export const starterDescription = toServiceDescription(StarterEcho);
