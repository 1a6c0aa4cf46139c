// What a QuickJS guest hands back at the end of a turn is shaped by the program (it owns
// its heap): the runner's reading of it refuses anything malformed and clamps timers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AbiError } from '../../../../src/host/drivers/wasm/engine.ts';
import { readReply, readTurn } from '../../../../src/host/drivers/wasm/quickjs-engine.ts';

const turn = (o: object) => JSON.stringify({ results: [], log: '', exit: null, served: true, oom: false, wake: null, ...o });

test('a well-formed turn is read as it is', () => {
  assert.deepEqual(readTurn(turn({ results: [[3, '{"status":200,"body":"{}"}']], log: 'x\n', wake: 25 })), {
    results: [[3, '{"status":200,"body":"{}"}']],
    log: 'x\n',
    exit: null,
    served: true,
    oom: false,
    wake: 25,
  });
});

test('a timer beyond what a host timer holds is clamped; a negative one is due now', () => {
  assert.equal(readTurn(turn({ wake: 1e12 })).wake, 2 ** 31 - 1);
  assert.equal(readTurn(turn({ wake: -5 })).wake, 0);
});

test('malformed turns and replies are refused', () => {
  for (const bad of ['nope', 'null', turn({ results: {} }), turn({ results: [['1', 'x']] }), turn({ exit: 300 }), turn({ exit: -1 }), turn({ wake: 'soon' }), turn({ wake: null, exit: 1.5 })]) {
    assert.throws(() => readTurn(bad), AbiError, bad);
  }
  for (const bad of ['{', '{"status":99,"body":""}', '{"status":600,"body":""}', '{"status":200,"body":5}', '{"status":"200","body":""}']) {
    assert.throws(() => readReply(bad), AbiError, bad);
  }
  assert.deepEqual(readReply('{"status":201,"body":"{\\"a\\":1}"}'), { status: 201, body: Buffer.from('{"a":1}') });
});
