// The wasm engine in process: the component ABI, and its state's exactness.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AbiError, activeDataRanges, checkModule, ComponentInstance, decodeState, encodeState, nonZeroPages, STATE_PAGE } from '../../../../src/host/drivers/wasm/engine.ts';
import { componentWasm, watToWasm } from '../../../fixtures/components.ts';

const opts = { maxMemoryBytes: 64 * 1024 * 1024, stdout: 1, stderr: 2 };
const none = Buffer.alloc(0);
const json = (c: ComponentInstance, op: string) => JSON.parse(c.handle(op, none).body.toString('utf8'));

describe('wasm engine', () => {
  it('restores exactly from an encoded state: memory, globals, and the data segments as the program left them', async () => {
    const bytes = await componentWasm(16);
    const module = new WebAssembly.Module(bytes);
    const c = ComponentInstance.start(module, opts);
    for (let i = 0; i < 7; i++) c.handle('inc', none);
    const state = c.capture();
    assert.ok(state.pageIndexes.length <= 4, 'only non-zero pages are captured');
    const encoded = encodeState(state);
    assert.ok(encoded.length < 2048);
    for (const ranges of [activeDataRanges(bytes), undefined]) {
      const r = ComponentInstance.restore(module, opts, decodeState(encoded), ranges);
      assert.deepEqual(json(r, 'inc'), { count: 8, calls: 8 });
      const s2 = r.capture();
      assert.deepEqual(s2.globals, c.capture().globals.map((g) => (g.name === 'calls' ? { ...g, value: '8' } : g)));
    }
    assert.deepEqual(json(c, 'get'), { count: 7, calls: 8 });
  });

  it('finds the data segments in the binary where a page scan finds them', async () => {
    const bytes = await componentWasm(2);
    const ranges = activeDataRanges(bytes)!;
    assert.ok(ranges.length > 0);
    const fresh = ComponentInstance.start(new WebAssembly.Module(bytes), opts).capture();
    const pagesOfRanges = new Set(ranges.flatMap((r) => [Math.floor(r.start / STATE_PAGE), Math.floor((r.end - 1) / STATE_PAGE)]));
    for (const p of fresh.pageIndexes) assert.ok(pagesOfRanges.has(p));
    assert.deepEqual([...nonZeroPages(Buffer.alloc(3 * STATE_PAGE), 0, 3 * STATE_PAGE)], []);
  });

  it('refuses modules outside the ABI and states that do not fit', async () => {
    const noHandle = new WebAssembly.Module(await watToWasm('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0))'));
    assert.throws(() => checkModule(noHandle), AbiError);
    const foreignImport = new WebAssembly.Module(
      await watToWasm('(module (import "env" "x" (func)) (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0) (func (export "handle") (param i32 i32 i32 i32) (result i64) i64.const 0))'),
    );
    assert.throws(() => checkModule(foreignImport), /may import only wasi_snapshot_preview1/);
    const module = new WebAssembly.Module(await componentWasm(16));
    const state = ComponentInstance.start(module, opts).capture();
    assert.throws(() => ComponentInstance.restore(module, { ...opts, maxMemoryBytes: 65536 }, state), /over this instance's limit/);
    assert.throws(() => decodeState(Buffer.from('garbage')));
  });
});
