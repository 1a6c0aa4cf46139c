// The Adventure Works services (Baltic's example), as shoal/service definitions: one object
// per service is both the JSON Schema the provider checks messages with and the static
// type farm scripts and handlers are checked against.
import { Type, defineService } from '../../src/service/index.ts';

const Item = Type.Object({ sku: Type.String({ minLength: 1 }), quantity: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });

export const Order = Type.Object(
  {
    orderId: Type.String({ minLength: 1, maxLength: 128 }),
    customer: Type.String({ minLength: 1 }),
    items: Type.Array(Item, { minItems: 1 }),
    card: Type.String({ pattern: '^[0-9]{12,19}$' }),
  },
  { additionalProperties: false },
);

export const Payment = defineService({
  name: 'payment',
  version: '1',
  operations: {
    Authorize: {
      input: Type.Object({ orderId: Type.String(), card: Type.String(), amount: Type.Number({ minimum: 0 }) }, { additionalProperties: false }),
      output: Type.Object({ authorization: Type.String(), by: Type.String() }),
      // Authorizing the same order twice yields the same authorization: safe to send twice (par does).
      idempotent: true,
    },
  },
});

export const OrderProcessing = defineService({
  name: 'order-processing',
  version: '1',
  operations: {
    Process: {
      input: Type.Object({ orderId: Type.String(), items: Order.properties.items, authorization: Type.String() }, { additionalProperties: false }),
      output: Type.Object({ orderId: Type.String(), processed: Type.Boolean(), duplicate: Type.Boolean() }),
      // Keyed by orderId: a second Process of one order is recognised and not done again.
      idempotent: true,
    },
    /** The record: how many times each order was processed (1, or the test fails) and how many duplicates were refused. */
    Processed: {
      input: Type.Object({}),
      output: Type.Object({ orders: Type.Record(Type.String(), Type.Integer()), duplicates: Type.Integer() }),
    },
  },
});

export const OrderEntry = defineService({
  name: 'order-entry',
  version: '1',
  operations: {
    SubmitOrder: {
      input: Order,
      output: Type.Object({ orderId: Type.String(), status: Type.String(), authorization: Type.String() }),
      idempotent: true,
    },
  },
  imports: { payment: Payment, processing: OrderProcessing },
});
