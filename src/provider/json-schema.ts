// Message safety: every message's body is checked against its operation's input schema
// before it is forwarded. Service descriptions carry plain JSON Schema (draft 2020-12
// subset), which TypeBox's checkers cannot run (they need TypeBox's own Kind markers),
// so this compiles a schema once into a tree of closures, per service version, and the
// message path only calls the result. No I/O; a failed check names the first offending
// field as a JSON pointer.
//
// Supported: type (one or a list), enum, const, properties, required,
// additionalProperties, patternProperties, propertyNames, min/maxProperties, items,
// prefixItems, contains, min/maxItems, uniqueItems, minimum, maximum, exclusiveMinimum,
// exclusiveMaximum, multipleOf, min/maxLength, pattern, anyOf, oneOf, allOf, not,
// if/then/else, dependentRequired, local $ref (#, #/$defs/…, #/definitions/…) and
// boolean schemas. `format` and other annotations are not asserted (as 2020-12 says).

export interface SchemaError {
  /** JSON pointer of the offending value ('' for the body itself). */
  path: string;
  message: string;
}

export type SchemaCheck = (value: unknown) => SchemaError | undefined;

type Node = (value: unknown, path: string) => SchemaError | undefined;

const ok: Node = () => undefined;

/** Compiles `schema`; throws on a $ref it cannot resolve or a pattern that is not a regular expression. */
export function compileSchema(schema: unknown): SchemaCheck {
  const root = schema;
  const refs = new Map<string, { node: Node | undefined }>();
  const compile = (s: unknown, at: string): Node => {
    if (s === true || s === undefined) return ok;
    if (s === false) return (_v, path) => ({ path, message: 'no value is allowed here' });
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new Error(`${at}: not a schema`);
    const o = s as Record<string, unknown>;
    const checks: Node[] = [];

    if (typeof o.$ref === 'string') {
      const ref = o.$ref;
      let cell = refs.get(ref);
      if (cell === undefined) {
        cell = { node: undefined };
        refs.set(ref, cell);
        cell.node = compile(resolveRef(root, ref), ref);
      }
      const c = cell;
      checks.push((v, p) => c.node!(v, p));
    }
    if (o.type !== undefined) {
      const types = (Array.isArray(o.type) ? o.type : [o.type]) as string[];
      checks.push((v, p) => (types.some((t) => isType(v, t)) ? undefined : { path: p, message: `must be ${types.join(' or ')}, got ${typeName(v)}` }));
    }
    if (Array.isArray(o.enum)) {
      const list = o.enum as unknown[];
      checks.push((v, p) => (list.some((e) => equal(e, v)) ? undefined : { path: p, message: `must be one of ${short(list)}` }));
    }
    if ('const' in o) {
      const c = o.const;
      checks.push((v, p) => (equal(c, v) ? undefined : { path: p, message: `must be ${short(c)}` }));
    }

    // numbers
    const num = (key: string, test: (v: number, limit: number) => boolean, words: string) => {
      if (typeof o[key] !== 'number') return;
      const limit = o[key] as number;
      checks.push((v, p) => (typeof v !== 'number' || test(v, limit) ? undefined : { path: p, message: `must be ${words} ${limit}, got ${v}` }));
    };
    num('minimum', (v, l) => v >= l, '≥');
    num('maximum', (v, l) => v <= l, '≤');
    num('exclusiveMinimum', (v, l) => v > l, '>');
    num('exclusiveMaximum', (v, l) => v < l, '<');
    num('multipleOf', (v, l) => Number.isInteger(v / l) || Math.abs(v / l - Math.round(v / l)) < 1e-9, 'a multiple of');

    // strings
    if (typeof o.minLength === 'number' || typeof o.maxLength === 'number') {
      const min = (o.minLength as number | undefined) ?? 0;
      const max = (o.maxLength as number | undefined) ?? Infinity;
      checks.push((v, p) => {
        if (typeof v !== 'string') return undefined;
        const n = codePoints(v);
        if (n < min) return { path: p, message: `must be at least ${min} characters long` };
        if (n > max) return { path: p, message: `must be at most ${max} characters long` };
        return undefined;
      });
    }
    if (typeof o.pattern === 'string') {
      const re = new RegExp(o.pattern, 'u');
      const text = o.pattern;
      checks.push((v, p) => (typeof v !== 'string' || re.test(v) ? undefined : { path: p, message: `must match the pattern ${text}` }));
    }

    // arrays
    const prefix = Array.isArray(o.prefixItems) ? (o.prefixItems as unknown[]).map((x, i) => compile(x, `${at}/prefixItems/${i}`)) : [];
    const items = o.items === undefined ? undefined : Array.isArray(o.items) ? undefined : compile(o.items, `${at}/items`);
    const legacyTuple = Array.isArray(o.items) ? (o.items as unknown[]).map((x, i) => compile(x, `${at}/items/${i}`)) : undefined;
    const tuple = legacyTuple ?? prefix;
    const contains = o.contains === undefined ? undefined : compile(o.contains, `${at}/contains`);
    if (tuple.length > 0 || items || contains || o.minItems !== undefined || o.maxItems !== undefined || o.uniqueItems === true) {
      const minItems = (o.minItems as number | undefined) ?? 0;
      const maxItems = (o.maxItems as number | undefined) ?? Infinity;
      const unique = o.uniqueItems === true;
      checks.push((v, p) => {
        if (!Array.isArray(v)) return undefined;
        if (v.length < minItems) return { path: p, message: `must have at least ${minItems} items` };
        if (v.length > maxItems) return { path: p, message: `must have at most ${maxItems} items` };
        for (let i = 0; i < v.length; i++) {
          const node = i < tuple.length ? tuple[i]! : items;
          if (node === undefined) continue;
          const e = node(v[i], `${p}/${i}`);
          if (e) return e;
        }
        if (contains && !v.some((x, i) => contains(x, `${p}/${i}`) === undefined)) return { path: p, message: 'must contain a matching item' };
        if (unique) {
          for (let i = 0; i < v.length; i++) for (let j = i + 1; j < v.length; j++) if (equal(v[i], v[j])) return { path: `${p}/${j}`, message: 'duplicates an earlier item' };
        }
        return undefined;
      });
    }

    // objects
    const props = isObject(o.properties) ? Object.entries(o.properties).map(([k, x]) => [k, compile(x, `${at}/properties/${k}`)] as const) : [];
    const propMap = new Map(props);
    const patterns = isObject(o.patternProperties)
      ? Object.entries(o.patternProperties).map(([k, x]) => [new RegExp(k, 'u'), compile(x, `${at}/patternProperties/${k}`)] as const)
      : [];
    const additional = o.additionalProperties === undefined ? undefined : compile(o.additionalProperties, `${at}/additionalProperties`);
    const noAdditional = o.additionalProperties === false;
    const names = o.propertyNames === undefined ? undefined : compile(o.propertyNames, `${at}/propertyNames`);
    const required = Array.isArray(o.required) ? (o.required as string[]) : [];
    const dependent = isObject(o.dependentRequired) ? Object.entries(o.dependentRequired as Record<string, string[]>) : [];
    const minProps = o.minProperties as number | undefined;
    const maxProps = o.maxProperties as number | undefined;
    if (props.length || patterns.length || additional || names || required.length || dependent.length || minProps !== undefined || maxProps !== undefined) {
      checks.push((v, p) => {
        if (!isObject(v)) return undefined;
        for (const r of required) if (!Object.hasOwn(v, r)) return { path: `${p}/${escape(r)}`, message: 'is required' };
        for (const [k, deps] of dependent) {
          if (!Object.hasOwn(v, k)) continue;
          for (const d of deps) if (!Object.hasOwn(v, d)) return { path: `${p}/${escape(d)}`, message: `is required when ${k} is present` };
        }
        let count = 0;
        for (const key in v) {
          if (!Object.hasOwn(v, key)) continue;
          count++;
          const value = v[key];
          const at2 = `${p}/${escape(key)}`;
          if (names) {
            const e = names(key, at2);
            if (e) return { path: at2, message: `property name ${e.message}` };
          }
          let matched = false;
          const node = propMap.get(key);
          if (node !== undefined) {
            matched = true;
            const e = node(value, at2);
            if (e) return e;
          }
          for (const [re, pn] of patterns) {
            if (!re.test(key)) continue;
            matched = true;
            const e = pn(value, at2);
            if (e) return e;
          }
          if (!matched) {
            if (noAdditional) return { path: at2, message: 'is not an allowed property' };
            if (additional) {
              const e = additional(value, at2);
              if (e) return e;
            }
          }
        }
        if (minProps !== undefined && count < minProps) return { path: p, message: `must have at least ${minProps} properties` };
        if (maxProps !== undefined && count > maxProps) return { path: p, message: `must have at most ${maxProps} properties` };
        return undefined;
      });
    }

    // combinators
    if (Array.isArray(o.allOf)) {
      const all = (o.allOf as unknown[]).map((x, i) => compile(x, `${at}/allOf/${i}`));
      checks.push((v, p) => {
        for (const n of all) {
          const e = n(v, p);
          if (e) return e;
        }
        return undefined;
      });
    }
    if (Array.isArray(o.anyOf)) {
      const any = (o.anyOf as unknown[]).map((x, i) => compile(x, `${at}/anyOf/${i}`));
      checks.push((v, p) => {
        let first: SchemaError | undefined;
        for (const n of any) {
          const e = n(v, p);
          if (!e) return undefined;
          first ??= e;
        }
        return deepest(first, { path: p, message: 'matches none of the allowed forms (anyOf)' });
      });
    }
    if (Array.isArray(o.oneOf)) {
      const one = (o.oneOf as unknown[]).map((x, i) => compile(x, `${at}/oneOf/${i}`));
      checks.push((v, p) => {
        let matches = 0;
        let first: SchemaError | undefined;
        for (const n of one) {
          const e = n(v, p);
          if (!e) matches++;
          else first ??= e;
        }
        if (matches === 1) return undefined;
        return matches === 0 ? deepest(first, { path: p, message: 'matches none of the allowed forms (oneOf)' }) : { path: p, message: 'matches more than one form (oneOf)' };
      });
    }
    if (o.not !== undefined) {
      const not = compile(o.not, `${at}/not`);
      checks.push((v, p) => (not(v, p) ? undefined : { path: p, message: 'matches a form that is not allowed (not)' }));
    }
    if (o.if !== undefined) {
      const cond = compile(o.if, `${at}/if`);
      const then = o.then === undefined ? ok : compile(o.then, `${at}/then`);
      const otherwise = o.else === undefined ? ok : compile(o.else, `${at}/else`);
      checks.push((v, p) => (cond(v, p) ? otherwise(v, p) : then(v, p)));
    }

    if (checks.length === 0) return ok;
    if (checks.length === 1) return checks[0]!;
    return (v, p) => {
      for (const c of checks) {
        const e = c(v, p);
        if (e) return e;
      }
      return undefined;
    };
  };
  const node = compile(schema, '#');
  return (value) => node(value, '');
}

function resolveRef(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#')) throw new Error(`$ref ${ref}: only local references (#/…) are supported`);
  let cur: unknown = root;
  for (const raw of ref.slice(1).split('/').slice(1)) {
    const key = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    if (!isObject(cur) && !Array.isArray(cur)) throw new Error(`$ref ${ref}: does not resolve`);
    cur = (cur as Record<string, unknown>)[key];
    if (cur === undefined) throw new Error(`$ref ${ref}: does not resolve`);
  }
  return cur;
}

/** Prefer the error from inside the value (it names a field) over the generic one. */
function deepest(inner: SchemaError | undefined, outer: SchemaError): SchemaError {
  return inner !== undefined && inner.path.length > outer.path.length ? inner : outer;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isType(v: unknown, t: string): boolean {
  switch (t) {
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    default:
      return false;
  }
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && Number.isInteger(v)) return 'integer';
  return typeof v;
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => equal(x, bb[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && equal((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

function escape(key: string): string {
  return key.replaceAll('~', '~0').replaceAll('/', '~1');
}

function short(v: unknown): string {
  const s = JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}
