// The seed's order scenario across three sidecars. The order service beside
// sidecar A orchestrates a Saga over three participants, each owned by the
// sidecar it lives on:
//   payment    service:payments@B  a service registered on sidecar B
//   inventory  store:C             sidecar C's built-in store
//   shipping   service:shipping    a service registered on A itself
// Order 123 commits. Order 124 is oversized: shipping fails, and the earlier
// steps are compensated, newest first (C's store puts the reservation's
// before-image back, B's payment service refunds). dtx picks the Saga from the
// requirements (eventual consistency, high availability).
//
// Start three sidecars, each in its own terminal in the project directory
// (the orchestrator lists the sidecars its participants name, and they list it):
//   npx dtx sidecar --id A --socket .dtx/A.sock --data .dtx/A --port 7400 --peer B=ws://127.0.0.1:7401 --peer C=ws://127.0.0.1:7402
//   npx dtx sidecar --id B --socket .dtx/B.sock --data .dtx/B --port 7401 --peer A=ws://127.0.0.1:7400
//   npx dtx sidecar --id C --socket .dtx/C.sock --data .dtx/C --port 7402 --peer A=ws://127.0.0.1:7400
// then run it:
//   npx bun examples/order-saga-federated.ts
// DTX_SOCKET_A, DTX_SOCKET_B and DTX_SOCKET_C name other sockets. The three
// services run in this one process to keep the example short; in a
// deployment each runs beside its own sidecar and connects to that one only.
import { type CallbackCall, connect } from "dtx/client";

type Order = { id: string; amount: number; sku: string };
const socket = (id: string) => process.env[`DTX_SOCKET_${id}`] ?? `.dtx/${id}.sock`;

// ---- the payment service, beside sidecar B ----------------------------------
const charged = new Map<string, number>();
const refunded: string[] = [];
const applied = new Set<string>(); // a service applies each idempotency key once
const once = (fn: (order: Order) => void) => (call: CallbackCall) => {
  if (applied.has(call.idempotencyKey)) return;
  fn((call.context as { order: Order }).order);
  applied.add(call.idempotencyKey);
};
const payments = await connect({ socket: socket("B") });
await payments.register("payments", {
  action: once((o) => void charged.set(o.id, o.amount)),
  compensate: once((o) => {
    if (charged.delete(o.id)) refunded.push(o.id); // refund_payment
  }),
});

// ---- the shipping service, beside sidecar A ---------------------------------
const shipped = new Set<string>();
const shipping = await connect({ socket: socket("A") });
await shipping.register("shipping", {
  action: once((o) => {
    if (o.sku === "OVERSIZED") throw new Error("no courier takes oversized parcels");
    shipped.add(o.id);
  }),
  compensate: once((o) => void shipped.delete(o.id)), // cancel_shipment
});

// ---- the warehouse, beside sidecar C: its stock is C's store ----------------
const warehouse = await connect({ socket: socket("C") });

// ---- the order service, beside sidecar A: it orchestrates --------------------
const orders = await connect({ socket: socket("A") });
// A's links to B and C come up a moment after the sidecars start.
for (let waited = 0; ; waited += 100) {
  const up = (await orders.peers()).filter((p) => p.state === "up").map((p) => p.id);
  if (up.includes("B") && up.includes("C")) break;
  if (waited >= 10_000) throw new Error(`sidecar A has no link to B and C after 10 s (up: [${up}]); start them with the --peer flags above`);
  await Bun.sleep(100);
}

const run = Date.now().toString(36); // names stay taken while their transaction is unfinished; each run uses its own
async function placeOrder(order: Order) {
  const t = await orders.createTransaction({
    name: `order-${order.id}-${run}`,
    requirements: { consistency: "eventual", availability: "high", timeout: 300 },
    context: { order },
  });
  await t.addParticipant({ participantId: "payment_service", endpoint: "service:payments@B", compensationAction: "refund_payment" });
  await t.addParticipant({
    participantId: "inventory_service",
    endpoint: "store:C",
    payload: { put: { [`reservations/${order.id}`]: { sku: order.sku, qty: 1 } } },
    compensationAction: "release_inventory",
  });
  await t.addParticipant({ participantId: "shipping_service", endpoint: "service:shipping", supports2pc: false, compensationAction: "cancel_shipment" });
  const r = await t.execute();
  const steps = r.participants.map((p) => `${p.participantId}=${p.status}@${p.sidecar}`).join(" ");
  console.log(`order ${order.id} (${t.name}): ${r.protocol} ${r.outcome}${r.reason ? ` (${r.reason})` : ""} ${steps}`);
}

await placeOrder({ id: "123", amount: 99, sku: "A" });
await placeOrder({ id: "124", amount: 500, sku: "OVERSIZED" });

const reservation = async (id: string) => JSON.stringify((await warehouse.get(`reservations/${id}`)) ?? null);
console.log(`payments on B: charged [${[...charged.keys()]}] refunded [${refunded}]`);
console.log(`C's store: reservations/123 ${await reservation("123")}, reservations/124 ${await reservation("124")}`);
console.log(`shipping on A: shipped [${[...shipped]}]`);
for (const c of [orders, warehouse, shipping, payments]) c.close();
