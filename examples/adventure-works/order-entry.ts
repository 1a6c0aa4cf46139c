// OrderEntry: called at checkout. Authorizes the payment (through whatever the farm bound
// its `payment` import to: par over payment1's ref and the external credit service), then
// hands the order to OrderProcessing. Both calls are typed by the imported definitions.
import { serve, type Handlers } from '../../src/service/index.ts';
import { OrderEntry } from './definitions.ts';

const PRICE = 10; // one price for every SKU: the example is about wiring, not pricing

export const orderEntryHandlers: Handlers<typeof OrderEntry> = {
  SubmitOrder: async ({ orderId, items, card }, { imports }) => {
    const amount = items.reduce((sum, i) => sum + i.quantity * PRICE, 0);
    const { authorization } = await imports.payment.Authorize({ orderId, card, amount });
    const done = await imports.processing.Process({ orderId, items, authorization });
    return { orderId, status: done.duplicate ? 'accepted (already processed)' : 'accepted', authorization };
  },
};

if (import.meta.main) serve(OrderEntry, orderEntryHandlers);
