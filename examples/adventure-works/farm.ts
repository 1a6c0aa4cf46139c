// The Adventure Works farm (Baltic's example), typed. Payment is reached through `par` over
// a ref to payment1 and an external credit service; two OrderEntry instances stand behind
// `or`; if payment1 crashes, the ref is rebound to payment2 by the provider (no script runs).
//   shoal apply examples/adventure-works/farm.ts
//   shoal call order-entry SubmitOrder '{"orderId":"o1","customer":"ann","items":[{"sku":"bike","quantity":1}],"card":"4111111111111111"}'
import { exportEndpoint, farm, importEndpoint, onCrash, or, par, ref, role, update } from '../../src/compose/index.ts';
import { OrderEntry, OrderProcessing, Payment } from './definitions.ts';
import { AW_IMAGES } from './images.ts';

/** The credit service outside the farm (examples/adventure-works/credit.ts). */
export const CREDIT_URL = process.env.AW_CREDIT_URL ?? 'http://127.0.0.1:7411';

export default farm('adventure-works', () => {
  const paymentRole = role(Payment, { image: AW_IMAGES.payment });
  const payment1 = paymentRole(undefined, { name: 'payment1' });
  const payment2 = paymentRole(undefined, { name: 'payment2' });
  const credit = importEndpoint(Payment, CREDIT_URL, { name: 'credit' });

  const [payment, r] = ref(payment1.exports, { name: 'payment-ref' });
  onCrash(payment1.instance, update(r, payment2.exports));

  const processing = role(OrderProcessing, { image: AW_IMAGES['order-processing'] })(undefined, { name: 'processing' });
  const entryRole = role(OrderEntry, { image: AW_IMAGES['order-entry'] });
  const imports = { payment: par(payment, credit), processing: processing.exports };
  const entry1 = entryRole(imports, { name: 'entry1' });
  const entry2 = entryRole(imports, { name: 'entry2' });
  exportEndpoint(or(entry1.exports, entry2.exports), 'order-entry');
});
