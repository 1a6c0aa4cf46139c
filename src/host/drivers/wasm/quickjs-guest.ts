// JavaScript that runs INSIDE QuickJS (compiled to WebAssembly) for a shoal/service
// program on the wasm driver, as text: the runner evaluates it in a fresh context.
//
// Unlike the isolate's bootstrap, nothing here calls back into the runner: there are no
// host functions at all. A QuickJS host function lives in a JS-side table of the
// quickjs-emscripten wrapper, which a snapshot of linear memory cannot carry, so a restored
// or forked copy would call into nothing. Everything the guest needs from outside comes in
// as arguments of the runner's calls (the message, fresh entropy), and everything it gives
// out goes back as their results (the reply, log lines, an exit).

export const QUICKJS_BOOTSTRAP = String.raw`
(() => {
  // The protocol's own JSON, kept from before the program runs (a program may replace JSON's).
  const stringify = JSON.stringify;
  const logQueue = [];
  let exitCode = null;
  let entropy = '';
  let uuidCount = 0;
  let served = false;
  let oom = false;
  const results = [];
  const timers = new Map();
  let nextTimer = 1;
  const noteError = (e) => {
    if (e instanceof InternalError && /out of memory/.test(String(e.message))) oom = true;
    line(['uncaught in a timer:', e]);
  };
  const show = (a) => {
    if (typeof a === 'string') return a;
    if (a instanceof Error) return a.stack ? a.message + '\n' + a.stack : String(a);
    try { return JSON.stringify(a); } catch { return String(a); }
  };
  const line = (args) => { logQueue.push(args.map(show).join(' ') + '\n'); };
  globalThis.console = { log: (...a) => line(a), info: (...a) => line(a), warn: (...a) => line(a), error: (...a) => line(a), debug: (...a) => line(a) };
  // Timers live here, in the guest's memory (so a snapshot holds them); the runner only
  // wakes the guest at the earliest due time (__shoalCollect's wake) and calls __shoalFire.
  const addTimer = (fn, ms, args, repeat) => {
    if (typeof fn !== 'function') throw new TypeError('timer callback must be a function');
    const id = nextTimer++;
    const every = Math.max(1, Number(ms) || 0);
    timers.set(id, { fn, args, at: Date.now() + (Number(ms) || 0), every: repeat ? every : 0 });
    return id;
  };
  const clearTimer = (id) => { timers.delete(Number(id)); };
  globalThis.setTimeout = (fn, ms, ...args) => addTimer(fn, ms, args, false);
  globalThis.setInterval = (fn, ms, ...args) => addTimer(fn, ms, args, true);
  globalThis.setImmediate = (fn, ...args) => addTimer(fn, 0, args, false);
  globalThis.clearTimeout = clearTimer;
  globalThis.clearInterval = clearTimer;
  globalThis.clearImmediate = clearTimer;
  Object.defineProperty(globalThis, '__shoalFire', {
    value: () => {
      const now = Date.now();
      for (const [id, t] of [...timers]) {
        if (t.at > now || !timers.has(id)) continue;
        if (t.every) t.at = now + t.every;
        else timers.delete(id);
        try { t.fn(...t.args); } catch (e) { if (exitCode !== null) return; noteError(e); }
        if (exitCode !== null) return;
      }
    },
  });
  if (typeof globalThis.queueMicrotask !== 'function') globalThis.queueMicrotask = (fn) => void Promise.resolve().then(fn);
  const stream = { write: (s) => { logQueue.push(String(s)); return true; } };
  const proc = {
    env: {},
    argv: ['quickjs'],
    pid: 1,
    platform: 'linux',
    version: 'v0.0.0-quickjs',
    versions: {},
    stdout: stream,
    stderr: stream,
    cwd: () => '/app',
    getuid: () => -1,
    getgid: () => -1,
    uptime: () => 0,
    on() { return proc; },
    once() { return proc; },
    off() { return proc; },
    nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)),
    exit(code) {
      exitCode = Number(code ?? 0) || 0;
      throw new Error('process.exit(' + code + '): the instance ends');
    },
  };
  globalThis.process = proc;

  // SHA-256 in the guest (node:crypto's createHash shim calls __shoalHash).
  const K = [0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2];
  const utf8 = (s) => {
    const out = [];
    for (const ch of s) {
      let c = ch.codePointAt(0);
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return out;
  };
  const sha256 = (bytes) => {
    const H = [0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19];
    const bitLen = bytes.length * 8;
    const m = bytes.slice();
    m.push(0x80);
    while (m.length % 64 !== 56) m.push(0);
    for (let i = 7; i >= 0; i--) m.push(i >= 4 ? 0 : (bitLen >>> (i * 8)) & 255);
    const w = new Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < m.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = (m[off + 4 * i] << 24) | (m[off + 4 * i + 1] << 16) | (m[off + 4 * i + 2] << 8) | m[off + 4 * i + 3];
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, h] = H;
      for (let i = 0; i < 64; i++) {
        const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
      H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
    }
    const out = [];
    for (const x of H) out.push((x >>> 24) & 255, (x >>> 16) & 255, (x >>> 8) & 255, x & 255);
    return out;
  };
  const hex = (bytes) => bytes.map((b) => (b < 16 ? '0' : '') + b.toString(16)).join('');
  const b64 = (bytes) => {
    const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    let s = '';
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
      s += A[n >> 18] + A[(n >> 12) & 63] + (i + 1 < bytes.length ? A[(n >> 6) & 63] : '=') + (i + 2 < bytes.length ? A[n & 63] : '=');
    }
    return s;
  };
  Object.defineProperty(globalThis, '__shoalHash', {
    value: (algorithm, parts, encoding) => {
      if (String(algorithm).toLowerCase() !== 'sha256') throw new Error('node:crypto createHash(' + algorithm + '): only sha256 is available in a wasm (QuickJS) component');
      // The isolate's shim passes strings, byte arrays as latin-1 strings: hashed as UTF-8 / bytes alike.
      const bytes = [];
      for (const p of parts) for (const b of utf8(String(p))) bytes.push(b);
      const digest = sha256(bytes);
      return encoding === 'base64' ? b64(digest) : hex(digest);
    },
  });
  // Random values come from the runner's entropy, fresh with every message: a fork or a
  // restored copy does not repeat its source's values (its memory holds the same PRNG state).
  // Math.random is xoshiro128** whose state takes in the message's entropy the first time
  // it is called in that message (so a message that draws nothing pays nothing).
  const rng = [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0x7f4a7c15];
  let mixed = '';
  const rotl = (x, k) => (x << k) | (x >>> (32 - k));
  const next32 = () => {
    const r = Math.imul(rotl(Math.imul(rng[1], 5), 7), 9) >>> 0;
    const t = rng[1] << 9;
    rng[2] ^= rng[0]; rng[3] ^= rng[1]; rng[1] ^= rng[2]; rng[0] ^= rng[3];
    rng[2] ^= t; rng[3] = rotl(rng[3], 11);
    return r;
  };
  Math.random = () => {
    if (mixed !== entropy) {
      mixed = entropy;
      for (let i = 0; i < 4; i++) rng[i] = (rng[i] ^ parseInt(entropy.slice(i * 8, i * 8 + 8), 16)) >>> 0;
      if ((rng[0] | rng[1] | rng[2] | rng[3]) === 0) rng[0] = 1;
      for (let i = 0; i < 8; i++) next32();
    }
    return (next32() * 2097152 + (next32() >>> 11)) / 9007199254740992;
  };
  Object.defineProperty(globalThis, '__shoalRandomUUID', {
    value: () => {
      const b = sha256(utf8(entropy + ':' + (uuidCount++)));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = hex(b.slice(0, 16));
      return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20, 32);
    },
  });
  Object.defineProperty(globalThis, '__shoalSetEnv', { value: (env) => { proc.env = env; } });
  globalThis.__shoalHost = {
    importCall: (name) => Promise.reject(new Error('import ' + name + ': a wasm (QuickJS) component cannot call imports yet; run it on the isolate or runc driver')),
    serving: () => { served = true; },
  };
  // The runner's entry points: start a message (its replies are collected when they settle,
  // now or after timers), then collect what the guest produced.
  Object.defineProperty(globalThis, '__shoalCall', {
    value: (id, op, body, seed) => {
      entropy = String(seed);
      const dispatch = globalThis.__shoalDispatch;
      if (typeof dispatch !== 'function') { results.push([id, stringify({ status: 503, body: stringify({ error: { code: 'unavailable', message: 'the program has not called serve()' } }) })]); return; }
      dispatch(op, body).then(
        (r) => { results.push([id, r]); },
        (e) => { results.push([id, stringify({ status: 500, body: stringify({ error: { code: 'internal', message: String(e && e.message || e) } }) })]); },
      );
    },
  });
  Object.defineProperty(globalThis, '__shoalCollect', {
    value: () => {
      const log = logQueue.join('');
      logQueue.length = 0;
      let next = null;
      for (const t of timers.values()) if (next === null || t.at < next) next = t.at;
      const out = stringify({ results, log, exit: exitCode, served, oom, wake: next === null ? null : Math.max(0, next - Date.now()) });
      results.length = 0;
      return out;
    },
  });
})();
`;
