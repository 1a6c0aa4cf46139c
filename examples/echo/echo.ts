// The echo service's definition: what other code imports to register, call or compose
// echo (the provider registers `echoDescription`; `connect(Echo, …)` calls it).
// `EchoWithProbes` adds the operations the host's tests use to crash, exhaust and probe
// an instance; the instance serves them, but they are not registered with the provider,
// so no consumer can reach them through it.
import { defineService, toServiceDescription, Type } from '../../src/service/index.ts';

export const ECHO_IMAGE = 'echo:1';

const operations = {
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
};

export const Echo = defineService({
  name: 'echo',
  version: '1',
  description: 'The smallest Shoal service: replies with what it is sent (examples/echo)',
  image: ECHO_IMAGE,
  operations,
  resources: { memoryMb: 128, cpuMillis: 500, pids: 64 },
});

export const EchoWithProbes = defineService({
  ...Echo,
  operations: {
    ...operations,
    Crash: {
      description: 'Replies {}, then exits with `code` 10 ms later',
      input: Type.Object({ code: Type.Integer({ minimum: 0, maximum: 255 }) }),
      output: Type.Object({}),
    },
    Hog: {
      description: 'Replies at once, then allocates and touches 16 MB every 10 ms up to `mb`, and holds it',
      input: Type.Object({ mb: Type.Number({ exclusiveMinimum: 0 }) }),
      output: Type.Object({ mb: Type.Number() }),
    },
    Spawn: {
      description: 'Starts `count` idle children; replies how many were still running 200 ms later, then kills them',
      input: Type.Object({ count: Type.Integer({ minimum: 0, maximum: 1000 }) }),
      output: Type.Object({ spawned: Type.Integer(), errors: Type.Optional(Type.Array(Type.String())) }),
    },
    Connect: {
      description: 'Tries a TCP connection (1 s timeout): for the no-network test',
      input: Type.Object({ host: Type.String(), port: Type.Integer({ minimum: 1, maximum: 65535 }) }),
      output: Type.Object({ connected: Type.Boolean(), error: Type.Optional(Type.String()) }),
    },
  },
});

/** The JSON description the provider registers (Echo and Inspect only). */
export const echoDescription = toServiceDescription(Echo);
