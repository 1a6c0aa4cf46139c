// Adventure Works with live state (issue 15): Payment and OrderProcessing run as wasm
// components (QuickJS), OrderEntry under runc. Payment is snapshotted when the farm is
// applied and every 10 s; when it crashes, the provider restores the newest snapshot, so
// its count of authorizations continues instead of starting again. OrderProcessing's
// record of orders is in its memory too: `shoal migrate` moves it to another host with it.
//   node examples/adventure-works/build.ts --live && shoal apply examples/adventure-works/farm-live.ts
import { exportEndpoint, farm, onCrash, restore, role, snapshot } from '../../src/compose/index.ts';
import { LiveOrderProcessing, LivePayment, OrderEntry } from './definitions.ts';
import { AW_IMAGES, AW_LIVE_IMAGES } from './images.ts';

export default farm('adventure-works-live', () => {
  const payment = role(LivePayment, { image: AW_LIVE_IMAGES.payment })(undefined, { name: 'payment' });
  // A compile error if Payment's driver could not snapshot (test/compose/fixtures/bad-snapshot-driver.ts).
  onCrash(payment.instance, restore(snapshot(payment.instance, { everyMs: 10_000 })));
  const processing = role(LiveOrderProcessing, { image: AW_LIVE_IMAGES['order-processing'] })(undefined, { name: 'processing' });
  const entry = role(OrderEntry, { image: AW_IMAGES['order-entry'] })({ payment: payment.exports, processing: processing.exports }, { name: 'entry' });
  exportEndpoint(entry.exports, 'order-entry');
});
