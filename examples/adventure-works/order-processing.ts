// OrderProcessing: fulfils an order once. Process is keyed by orderId: a second Process of
// the same order (a retry after an OrderEntry crash) is recognised and not done again; the
// record is what Processed returns.
import { serve, type Handlers } from '../../src/service/index.ts';
import { OrderProcessing } from './definitions.ts';

export function processingHandlers(): Handlers<typeof OrderProcessing> {
  const processed = new Map<string, number>();
  let duplicates = 0;
  return {
    Process: ({ orderId }) => {
      if (processed.has(orderId)) {
        duplicates++;
        return { orderId, processed: false, duplicate: true };
      }
      processed.set(orderId, 1);
      return { orderId, processed: true, duplicate: false };
    },
    Processed: () => ({ orders: Object.fromEntries(processed), duplicates }),
  };
}

if (import.meta.main) serve(OrderProcessing, processingHandlers());
