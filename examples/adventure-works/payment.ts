// Payment: authorizes an amount on a card. The authorization is derived from the order, so
// two payment services answering the same order (par) agree, and asking twice is harmless.
// It counts the authorizations it gave: state in memory, which a wasm component keeps
// across a crash when its farm restores it from a snapshot (farm-live.ts).
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { serve, type Handlers } from '../../src/service/index.ts';
import { Payment } from './definitions.ts';

export function paymentHandlers(by: string): Handlers<typeof Payment> {
  let authorizations = 0;
  return {
    Authorize: ({ orderId, card, amount }) => ({
      authorization: `auth-${createHash('sha256').update(`${orderId}:${card.slice(-4)}:${amount}`).digest('hex').slice(0, 12)}`,
      by,
      authorizations: ++authorizations,
    }),
  };
}

if (import.meta.main) serve(Payment, paymentHandlers(`payment@${hostname()}`));
