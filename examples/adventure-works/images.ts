// The Adventure Works image tags (built by build.ts, used by farm.ts).
export const AW_IMAGES = {
  payment: 'aw-payment:1',
  'order-processing': 'aw-order-processing:1',
  'order-entry': 'aw-order-entry:1',
} as const;

/** Payment and OrderProcessing as wasm components (QuickJS), for farm-live.ts (build.ts --live). */
export const AW_LIVE_IMAGES = {
  payment: 'aw-payment-live:1',
  'order-processing': 'aw-order-processing-live:1',
} as const;
