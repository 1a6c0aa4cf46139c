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

const paymentOperations = {
  Authorize: {
    input: Type.Object({ orderId: Type.String(), card: Type.String(), amount: Type.Number({ minimum: 0 }) }, { additionalProperties: false }),
    // authorizations: how many this Payment instance has given (its memory: a restore continues it).
    output: Type.Object({ authorization: Type.String(), by: Type.String(), authorizations: Type.Optional(Type.Integer()) }),
    // Authorizing the same order twice yields the same authorization: safe to send twice (par does).
    idempotent: true,
  },
};

export const Payment = defineService({ name: 'payment', version: '1', operations: paymentOperations });

/**
 * Payment as a wasm component (QuickJS, examples/adventure-works/farm-live.ts): the same
 * program; its driver is in its type, so a farm script may snapshot it.
 */
export const LivePayment = defineService({ name: 'payment', version: '1', driver: 'wasm', operations: paymentOperations });

const processingOperations = {
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
};

export const OrderProcessing = defineService({ name: 'order-processing', version: '1', operations: processingOperations });

/** OrderProcessing as a wasm component: its record of orders moves with it (shoal migrate). */
export const LiveOrderProcessing = defineService({ name: 'order-processing', version: '1', driver: 'wasm', operations: processingOperations });

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
