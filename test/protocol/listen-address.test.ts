import { test } from 'node:test';
import assert from 'node:assert/strict';
import { advertisedHost, advertisedUrl, isWildcardHost } from '../../src/protocol/listen-address.ts';

test('the advertised address of a listen address', () => {
  const cases: Array<[listen: string, advertise: string | undefined, want: string]> = [
    ['127.0.0.1', undefined, '127.0.0.1'],
    ['0.0.0.0', undefined, '127.0.0.1'],
    ['::', undefined, '127.0.0.1'],
    ['0.0.0.0', '10.1.2.3', '10.1.2.3'],
    ['192.168.0.5', '10.1.2.3', '10.1.2.3'],
    ['::1', undefined, '[::1]'],
    ['::', 'fd00::7', '[fd00::7]'],
    ['localhost', undefined, 'localhost'],
  ];
  for (const [listen, advertise, want] of cases) assert.equal(advertisedHost(listen, advertise), want, `${listen} / ${advertise}`);
  assert.equal(advertisedUrl('::1', 8080), 'http://[::1]:8080');
  assert.equal(advertisedUrl('0.0.0.0', 80, 'h.example'), 'http://h.example:80');
  assert.deepEqual(['0.0.0.0', '::', '::1'].map(isWildcardHost), [true, true, false]);
});
