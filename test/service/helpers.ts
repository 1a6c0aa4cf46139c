// Shared by the service tests: HTTP over a Unix socket, and temp dirs short enough for
// socket paths (sun_path is 108 bytes).
import { mkdtemp } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Reply {
  status: number;
  text: string;
  json: any;
  headers: Record<string, string | string[] | undefined>;
}

export function call(socketPath: string, method: string, path: string, body?: string | object): Promise<Reply> {
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, agent: false, headers: data === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, text, json, headers: res.headers });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

export const post = (socketPath: string, op: string, body?: string | object) => call(socketPath, 'POST', `/${op}`, body ?? {});

export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'shoal-svc-'));
}
