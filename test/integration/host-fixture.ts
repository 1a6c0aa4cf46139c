// A real store in-process holding the node template and the echo image, and hosts
// started on port 0 with temp data dirs: what the host integration tests run against.
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildImage, buildNodeTemplate, createRegistryClient, startStore, type RunningStore } from '../../src/image/index.ts';
import { startHost, type Host, type HostOptions } from '../../src/host/index.ts';
import { listMounts } from '../../src/host/rootfs/overlay.ts';
import { parseImageRef } from '../../src/protocol/image-ref.ts';
import type { DeploymentPlan, DeploymentResult } from '../../src/protocol/deployment.ts';

const run = promisify(execFile);

export const TOKEN = 'host-test-token-0123456789';
export const echoRoot = new URL('../../examples/echo/rootfs', import.meta.url).pathname;

/** Why runc tests cannot run here, or undefined when they can. */
export async function runcMissing(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (runc containers and overlay mounts)';
  try {
    await run('runc', ['--version']);
  } catch {
    return 'runc is not installed';
  }
  return undefined;
}

export interface StoreFixture {
  store: RunningStore;
  /** echo@sha256:… */
  echoRef: string;
  /** Compressed bytes of the echo image's layers. */
  echoLayerBytes: number;
  close(): Promise<void>;
}

export async function startEchoStore(): Promise<StoreFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-store-'));
  const store = await startStore({ dataDir: dir });
  try {
    const client = createRegistryClient({ baseUrl: store.url });
    const template = await buildNodeTemplate({ client });
    const image = await buildImage({
      client,
      source: echoRoot,
      template: parseImageRef(template.name),
      ref: parseImageRef('echo:1'),
      process: { cmd: ['/usr/local/bin/node', '/app/server.mjs'] },
    });
    return {
      store,
      echoRef: image.reference,
      echoLayerBytes: image.imageSize,
      async close() {
        await store.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await store.close();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

export interface HostFixture {
  host: Host;
  dataDir: string;
  api(path: string, init?: { method?: string; body?: unknown; token?: string | null }): Promise<{ status: number; json: any; text: string }>;
  deploy(plan: Partial<DeploymentPlan>): Promise<{ status: number; json: any; text: string }>;
  /** POST <endpoint.url>/<op> with the route token. */
  call(endpoint: DeploymentResult['endpoint'], op: string, body: unknown, token?: string): Promise<{ status: number; json: any }>;
  restart(options?: Partial<HostOptions>): Promise<Host>;
  close(opts?: { stopInstances?: boolean }): Promise<void>;
}

export async function startTestHost(fx: StoreFixture, options: Partial<HostOptions> = {}, dataDir?: string): Promise<HostFixture> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'shoal-h-')));
  const base: HostOptions = {
    dataDir: dir,
    listen: { host: '127.0.0.1', port: 0 },
    token: TOKEN,
    capacity: { memoryMb: 8192, cpuMillis: 16_000, instances: 50 },
    driver: 'runc',
    ...options,
  };
  let host = await startHost(base);
  const api: HostFixture['api'] = async (path, init = {}) => {
    const headers: Record<string, string> = {};
    if (init.token !== null) headers.authorization = `Bearer ${init.token ?? TOKEN}`;
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(host.controlUrl + path, {
      method: init.method ?? 'GET',
      headers,
      ...(init.body !== undefined ? { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) } : {}),
    });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };
  const fixture: HostFixture = {
    get host() {
      return host;
    },
    dataDir: dir,
    api,
    deploy: (plan) => api('/v1/instances', { method: 'POST', body: echoPlan(fx, plan) }),
    async call(endpoint, op, body, token) {
      const res = await fetch(`${endpoint.url}/${op}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-shoal-route': token ?? endpoint.token },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      return { status: res.status, json };
    },
    async restart(more = {}) {
      host = await startHost({ ...base, ...more });
      return host;
    },
    async close(opts) {
      await host.close(opts);
      // Never recurse into a mount that was left behind (the tests then report it).
      if (dataDir === undefined && (opts?.stopInstances ?? true) && (await listMounts(dir)).length === 0) {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
  return fixture;
}

export function echoPlan(fx: StoreFixture, over: Partial<DeploymentPlan> = {}): DeploymentPlan {
  return {
    service: { name: 'echo', version: '1' },
    image: fx.echoRef,
    store: fx.store.url,
    resources: { memoryMb: 128, cpuMillis: 500, pids: 64 },
    readiness: { timeoutMs: 10_000 },
    ...over,
  };
}

/** What a host left on the machine under its data dir: mounts, runc containers, cgroups. */
export async function leftovers(dataDir: string, ids: string[]): Promise<{ mounts: string[]; containers: string[]; cgroups: string[]; instanceDirs: string[] }> {
  const mounts = await listMounts(dataDir);
  let containers: string[] = [];
  try {
    const { stdout } = await run('runc', ['--root', join(dataDir, 'runc'), 'list', '--format', 'json']);
    containers = ((JSON.parse(stdout || 'null') as Array<{ id: string }> | null) ?? []).map((c) => c.id);
  } catch {
    containers = [];
  }
  const cgroups: string[] = [];
  for (const id of ids) {
    try {
      const { stdout } = await run('find', ['/sys/fs/cgroup', '-maxdepth', '8', '-type', 'd', '-name', id]);
      cgroups.push(...stdout.split('\n').filter(Boolean));
    } catch (e) {
      // find exits 1 on unreadable dirs; keep what it printed
      cgroups.push(...String((e as { stdout?: string }).stdout ?? '').split('\n').filter(Boolean));
    }
  }
  let instanceDirs: string[] = [];
  try {
    instanceDirs = await readdir(join(dataDir, 'instances'));
  } catch {
    instanceDirs = [];
  }
  return { mounts, containers, cgroups, instanceDirs };
}

/** What is left of one instance: its mounts, container, cgroups and directory. */
export async function leftoversOf(dataDir: string, id: string): Promise<{ mounts: string[]; containers: string[]; cgroups: string[]; instanceDirs: string[] }> {
  const all = await leftovers(dataDir, [id]);
  return {
    mounts: all.mounts.filter((m) => m.includes(`/${id}/`) || m.endsWith(`/${id}`)),
    containers: all.containers.filter((c) => c === id),
    cgroups: all.cgroups,
    instanceDirs: all.instanceDirs.filter((d) => d === id),
  };
}
