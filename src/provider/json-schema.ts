// Message safety: every message's body is checked against its operation's input schema
// before it is forwarded. Schemas are plain JSON Schema 2020-12 (service descriptions
// travel as JSON), compiled once per service version by Ajv's 2020 dialect; the message
// path only calls the result. No I/O; a failed check names the offending field as a JSON
// pointer. Why Ajv and not TypeBox's Schema.Compile: Ajv's strict mode refuses keywords
// it would not enforce, and it takes a pluggable regular-expression engine; TypeBox's
// compiler ignores unknown keywords and runs `pattern` on the backtracking RegExp.
// bench/validation.ts measures both against the old hand-written checker.
//
// What no message or registration may do (issue 9, item 5):
// - stop the process: values are bounded in depth before Ajv sees them (its compiled code
//   recurses with the value through recursive $refs, and its deep-equality helper with
//   `uniqueItems`/`enum`/`const`); a RangeError that escapes anyway is a refusal, not a crash;
// - stall the event loop: `pattern` and `patternProperties` run on RE2 (re2js), which
//   matches in linear time; patterns RE2 cannot run in linear time (backreferences,
//   lookaround) are refused at registration. `uniqueItems` on items that are not scalars
//   is quadratic in Ajv, so it needs a `maxItems` no larger than MAX_UNIQUE_ITEMS.
// - pass unchecked: any keyword Ajv would not enforce (unknown keywords, `format`s it has
//   no checker for, other dialects' `$schema`, remote `$ref`s) fails at registration.
// Message size is bounded before parsing, by the router's maxBodyBytes.
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import type { RegExpEngine } from 'ajv/dist/types/index.js';
import { RE2JS } from 're2js';

export interface SchemaError {
  /** JSON pointer of the offending value ('' for the body itself). */
  path: string;
  message: string;
}

export type SchemaCheck = (value: unknown) => SchemaError | undefined;

export interface CompileOptions {
  /** Deepest nesting of arrays and objects a value may have. Default 64. */
  maxDepth?: number;
}

export const DEFAULT_MAX_DEPTH = 64;
/** Largest array `uniqueItems` may compare pairwise (items that are not all scalars). */
export const MAX_UNIQUE_ITEMS = 1000;

/** RE2 behind Ajv's RegExpLike: linear-time matching, JS syntax translated first. */
const re2: RegExpEngine = Object.assign(
  (pattern: string): { test(s: string): boolean; toString(): string } => {
    let compiled: RE2JS;
    try {
      compiled = RE2JS.compile(RE2JS.translateRegExp(pattern));
    } catch (e) {
      throw new Error(`pattern ${JSON.stringify(pattern)} cannot be matched in linear time (RE2 refuses it: ${(e as Error).message})`);
    }
    // Ajv keys its cache of patterns by toString(): it must name the pattern.
    return { test: (s: string) => compiled.test(s), toString: () => `re2:${pattern}` };
  },
  { code: 'shoal-re2' },
);

// One instance for every schema (creating one compiles the 2020 meta-schemas); each schema
// is removed again after compiling so equal `$id`s in two services do not collide.
// strictTypes, strictTuples and strictRequired are lints (a `required` without a matching
// `properties`, a `properties` without `type: object`): Ajv enforces such schemas exactly,
// so they stay accepted. strictSchema (unknown keywords, unknown formats) is what refuses
// whatever would go unenforced.
const ajv = new Ajv2020({
  strict: true,
  strictTypes: false,
  strictTuples: false,
  strictRequired: false,
  allErrors: false,
  verbose: true, // errors carry the offending value (to say what was sent); costs nothing on success
  multipleOfPrecision: 9,
  code: { regExp: re2 },
});

/**
 * Compiles `schema`; throws (with a message fit for the registrant) on a keyword that would
 * not be enforced, a $ref it cannot resolve, a pattern RE2 refuses, or unbounded uniqueItems.
 */
export function compileSchema(schema: unknown, options: CompileOptions = {}): SchemaCheck {
  if (typeof schema !== 'boolean' && !isObject(schema)) throw new Error('not a schema (an object or a boolean)');
  if (isObject(schema)) refuseUnbounded(schema, '#');
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  const normal = modernTuples(schema) as Record<string, unknown> | boolean;
  let validate: ValidateFunction;
  try {
    validate = ajv.compile(normal);
  } finally {
    if (isObject(normal)) ajv.removeSchema(normal);
  }
  return (value) => {
    if (!depthWithin(value, maxDepth)) return { path: '', message: `is nested deeper than ${maxDepth} levels` };
    try {
      if (validate(value)) return undefined;
    } catch (e) {
      if (e instanceof RangeError) return { path: '', message: `is nested too deeply to check` };
      throw e;
    }
    return describe(validate.errors ?? []);
  };
}

/** Iterative (it must not overflow on the very values it guards against). */
export function depthWithin(value: unknown, maxDepth: number): boolean {
  if (typeof value !== 'object' || value === null) return true;
  const stack: unknown[] = [value];
  const depths: number[] = [1];
  while (stack.length > 0) {
    const v = stack.pop();
    const d = depths.pop()!;
    if (d > maxDepth) return false;
    if (Array.isArray(v)) {
      for (const x of v) {
        if (typeof x === 'object' && x !== null) {
          stack.push(x);
          depths.push(d + 1);
        }
      }
    } else {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        const x = o[k];
        if (typeof x === 'object' && x !== null) {
          stack.push(x);
          depths.push(d + 1);
        }
      }
    }
  }
  return true;
}

/**
 * TypeBox 0.34's Tuple writes the draft-07 form (`items: [...]`, `additionalItems`), which
 * 2020-12 spells `prefixItems` and `items`: rewrite it (a copy) so such services still register.
 */
function modernTuples(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(modernTuples);
  if (!isObject(s)) return s;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) out[k] = k === 'enum' || k === 'const' || k === 'default' || k === 'examples' ? v : modernTuples(v);
  if (Array.isArray(out.items) && out.prefixItems === undefined) {
    out.prefixItems = out.items;
    delete out.items;
    if (out.additionalItems !== undefined) out.items = out.additionalItems;
    delete out.additionalItems;
  }
  return out;
}

/** uniqueItems over non-scalar items is pairwise deep equality: bound it at registration. */
function refuseUnbounded(root: Record<string, unknown>, at: string): void {
  const seen = new Set<unknown>();
  const walk = (s: unknown, where: string, depth: number): void => {
    if (typeof s !== 'object' || s === null || seen.has(s)) return;
    if (depth > 256) throw new Error(`${where}: the schema is nested too deeply`);
    seen.add(s);
    if (Array.isArray(s)) {
      s.forEach((x, i) => walk(x, `${where}/${i}`, depth + 1));
      return;
    }
    const o = s as Record<string, unknown>;
    if (o.uniqueItems === true && !scalarItems(o.items) && !(typeof o.maxItems === 'number' && o.maxItems <= MAX_UNIQUE_ITEMS)) {
      throw new Error(`${where}: uniqueItems needs items of a scalar type or a maxItems of at most ${MAX_UNIQUE_ITEMS} (checking it is quadratic)`);
    }
    for (const [k, x] of Object.entries(o)) if (k !== 'enum' && k !== 'const' && k !== 'examples' && k !== 'default') walk(x, `${where}/${k}`, depth + 1);
  };
  walk(root, at, 0);
}

const SCALARS = new Set(['string', 'number', 'integer', 'boolean', 'null']);
function scalarItems(items: unknown): boolean {
  if (!isObject(items)) return false;
  const t = items.type;
  if (typeof t === 'string') return SCALARS.has(t);
  return Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === 'string' && SCALARS.has(x));
}

/** The error that names the deepest field (inside anyOf/oneOf that is the branch's own). */
function describe(errors: ErrorObject[]): SchemaError {
  let best: SchemaError = { path: '', message: 'is not valid' };
  let bestDepth = -1;
  for (const e of errors) {
    const one = toSchemaError(e);
    const depth = one.path === '' ? 0 : one.path.split('/').length;
    if (depth > bestDepth) {
      best = one;
      bestDepth = depth;
    }
  }
  return best;
}

function toSchemaError(e: ErrorObject): SchemaError {
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return { path: `${e.instancePath}/${escape(String(p.missingProperty))}`, message: 'is required' };
    case 'dependentRequired':
      return { path: `${e.instancePath}/${escape(String(p.missingProperty))}`, message: `is required when ${String(p.property)} is present` };
    case 'additionalProperties':
    case 'unevaluatedProperties':
      return {
        path: `${e.instancePath}/${escape(String(p.additionalProperty ?? p.unevaluatedProperty))}`,
        message: 'is not an allowed property',
      };
    case 'uniqueItems':
      return { path: `${e.instancePath}/${Math.max(Number(p.i), Number(p.j))}`, message: `duplicates item ${Math.min(Number(p.i), Number(p.j))}` };
    case 'type':
      return { path: e.instancePath, message: `must be ${String(p.type).split(',').join(' or ')}, got ${typeName(e.data)}` };
    case 'oneOf':
      return { path: e.instancePath, message: p.passingSchemas === null ? 'matches none of the allowed forms (oneOf)' : 'matches more than one form (oneOf)' };
    case 'not':
      return { path: e.instancePath, message: 'matches a form that is not allowed (not)' };
    case 'enum':
      return { path: e.instancePath, message: `must be one of ${short(p.allowedValues)}` };
    case 'const':
      return { path: e.instancePath, message: `must be ${short(p.allowedValue)}` };
    default:
      return { path: e.instancePath, message: e.message ?? `fails ${e.keyword}` };
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && Number.isInteger(v)) return 'integer';
  return typeof v;
}

function escape(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

function short(v: unknown): string {
  const s = JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
