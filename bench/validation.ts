// Message-path cost of input validation (issue 9, item 5): the hand-written checker Shoal
// had before (src/provider/json-schema.ts at OLD_COMMIT, loaded from git), Ajv 2020 in
// strict mode with RE2 patterns (what ships, with and without its depth bound), and
// TypeBox 1.x's Schema.Compile (JIT, native RegExp). Each checks an already parsed body,
// as the router calls it after JSON.parse. Per message figures are batches of BATCH
// checks timed together and divided (one check is below the timer's resolution); the
// variants run interleaved, in rotated order, the same messages in each timed region.
//   node bench/validation.ts [--rounds 400]
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Schema from 'typebox/schema';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { RE2JS } from 're2js';
import { compileSchema } from '../src/provider/json-schema.ts';

const OLD_COMMIT = '91c79d0';
const BATCH = 200;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A typical service input: an order with an id pattern, numbers, a short list, a nested $ref. */
export const ORDER_SCHEMA = {
  type: 'object',
  properties: {
    id: { type: 'string', pattern: '^o-[0-9]+$' },
    customer: { type: 'string', minLength: 1, maxLength: 64 },
    qty: { type: 'integer', minimum: 1, maximum: 99 },
    price: { type: 'number', exclusiveMinimum: 0 },
    tags: { type: 'array', items: { type: 'string', maxLength: 16 }, maxItems: 8, uniqueItems: true },
    kind: { enum: ['retail', 'trade'] },
    note: { type: ['string', 'null'] },
    address: { $ref: '#/$defs/address' },
  },
  required: ['id', 'customer', 'qty'],
  additionalProperties: false,
  $defs: {
    address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' }, zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['city'] },
  },
};

const VALID = JSON.parse(
  '{"id":"o-12345","customer":"Ada Lovelace","qty":3,"price":12.5,"tags":["gift","fragile","express"],"kind":"retail","note":null,"address":{"street":"1 Main St","city":"Cambridge","zip":"02139"}}',
);
const INVALID = JSON.parse(
  '{"id":"o-12345","customer":"Ada Lovelace","qty":3,"price":12.5,"tags":["gift","fragile","express"],"kind":"retail","note":null,"address":{"street":"1 Main St","city":"Cambridge","zip":"0213X"}}',
);

type Check = (value: unknown) => unknown;

export interface ValidationRow {
  name: string;
  validP50Ns: number;
  validP99Ns: number;
  invalidP50Ns: number;
  invalidP99Ns: number;
}

async function oldChecker(): Promise<{ check: Check; cleanup: () => Promise<void> }> {
  const source = execFileSync('git', ['show', `${OLD_COMMIT}:src/provider/json-schema.ts`], { cwd: ROOT, encoding: 'utf8' });
  const dir = await mkdtemp(join(tmpdir(), 'shoal-bench-validation-'));
  const file = join(dir, 'old-json-schema.ts');
  await writeFile(file, source);
  const mod = (await import(file)) as { compileSchema(s: unknown): Check };
  return { check: mod.compileSchema(ORDER_SCHEMA), cleanup: () => rm(dir, { recursive: true, force: true }) };
}

function ajvRaw(): Check {
  const re2 = Object.assign((p: string) => {
    const r = RE2JS.compile(RE2JS.translateRegExp(p));
    return { test: (s: string) => r.test(s), toString: () => `re2:${p}` };
  }, { code: 're2' });
  const ajv = new Ajv2020({ strict: true, strictTypes: false, strictTuples: false, strictRequired: false, code: { regExp: re2 } });
  const v = ajv.compile(ORDER_SCHEMA);
  return (value) => (v(value) ? undefined : v.errors);
}

function typebox(): Check {
  const v = Schema.Compile(ORDER_SCHEMA as unknown as Parameters<typeof Schema.Compile>[0]);
  return (value) => (v.Check(value) ? undefined : v.Errors(value)[1][0]);
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

export async function runValidationBench(options: { rounds?: number } = {}): Promise<ValidationRow[]> {
  const rounds = options.rounds ?? 400;
  const old = await oldChecker();
  try {
    const variants: Array<{ name: string; check: Check }> = [
      { name: 'old hand-written checker', check: old.check },
      { name: 'Ajv 2020 strict + RE2 + depth bound (shipped)', check: compileSchema(ORDER_SCHEMA) },
      { name: 'Ajv 2020 strict + RE2, no depth bound', check: ajvRaw() },
      { name: 'TypeBox 1.x Schema.Compile (native RegExp)', check: typebox() },
    ];
    // Each must agree on what is valid, or the comparison means nothing.
    for (const v of variants) {
      if (v.check(VALID) !== undefined) throw new Error(`${v.name} refuses the valid message`);
      if (v.check(INVALID) === undefined) throw new Error(`${v.name} accepts the invalid message`);
    }
    const samples = variants.map(() => ({ valid: [] as number[], invalid: [] as number[] }));
    let sink = 0;
    const time = (check: Check, value: unknown): number => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < BATCH; i++) if (check(value) !== undefined) sink++;
      return Number(process.hrtime.bigint() - t0) / BATCH;
    };
    for (let warm = 0; warm < 50; warm++) for (const v of variants) time(v.check, warm % 2 ? VALID : INVALID);
    for (let r = 0; r < rounds; r++) {
      for (let k = 0; k < variants.length; k++) {
        const i = (k + r) % variants.length;
        samples[i]!.valid.push(time(variants[i]!.check, VALID));
        samples[i]!.invalid.push(time(variants[i]!.check, INVALID));
      }
    }
    if (sink === 0) throw new Error('the invalid message was never refused');
    return variants.map((v, i) => {
      const valid = samples[i]!.valid.sort((a, b) => a - b);
      const invalid = samples[i]!.invalid.sort((a, b) => a - b);
      return { name: v.name, validP50Ns: percentile(valid, 0.5), validP99Ns: percentile(valid, 0.99), invalidP50Ns: percentile(invalid, 0.5), invalidP99Ns: percentile(invalid, 0.99) };
    });
  } finally {
    await old.cleanup();
  }
}

export function formatValidationBench(rows: ValidationRow[]): string {
  const us = (ns: number) => `${(ns / 1000).toFixed(2)} µs`;
  return [
    `A typical service input (${JSON.stringify(VALID).length} bytes, 8 fields, a pattern, a nested $ref), checked after JSON.parse; per message, batches of ${BATCH}, interleaved.`,
    '',
    '| validator | valid p50 | valid p99 | invalid p50 | invalid p99 |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.name} | ${us(r.validP50Ns)} | ${us(r.validP99Ns)} | ${us(r.invalidP50Ns)} | ${us(r.invalidP99Ns)} |`),
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--rounds');
  const rows = await runValidationBench(i === -1 ? {} : { rounds: Number(process.argv[i + 1]) });
  console.log(formatValidationBench(rows));
}
