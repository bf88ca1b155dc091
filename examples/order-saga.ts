// The seed's scenario: an order across payment, inventory and shipping
// services, each with a compensation, coordinated by dtx. The three services
// are small HTTP servers started here; dtx picks the protocol from the
// requirements (eventual consistency, high availability → Saga).
//
//   npm start                        # a sidecar, in another terminal
//   npx bun examples/order-saga.ts   # DTX_SOCKET picks another sidecar
import { connect } from "dtx/client";

type Ledger = { charged: Map<string, number>; reserved: Map<string, number>; shipped: Set<string> };
const ledger: Ledger = { charged: new Map(), reserved: new Map(), shipped: new Set() };
const applied = new Set<string>(); // idempotency keys already applied

function service(name: string, ops: Record<string, (order: { id: string; amount: number; sku: string }) => void>) {
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const op = new URL(req.url).pathname.split("/").pop()!;
      const body = (await req.json()) as { context: { order: { id: string; amount: number; sku: string } } };
      const key = req.headers.get("idempotency-key")!;
      if (applied.has(key)) return Response.json({ status: "ok", duplicate: true });
      try {
        ops[op]?.(body.context.order);
      } catch (e) {
        return Response.json({ status: "failure", reason: (e as Error).message }, { status: 409 });
      }
      applied.add(key);
      return Response.json({ status: "ok", service: name, op });
    },
  });
}

const payment = service("payment", {
  execute: (o) => void ledger.charged.set(o.id, o.amount),
  compensate: (o) => void ledger.charged.delete(o.id), // refund_payment
});
const inventory = service("inventory", {
  execute: (o) => void ledger.reserved.set(o.id, 1),
  compensate: (o) => void ledger.reserved.delete(o.id), // release_inventory
});
const shipping = service("shipping", {
  execute: (o) => {
    if (o.sku === "OVERSIZED") throw new Error("no courier takes oversized parcels");
    ledger.shipped.add(o.id);
  },
  compensate: (o) => void ledger.shipped.delete(o.id), // cancel_shipment
});

const dtx = await connect();
const url = (s: { port: number | undefined }) => `http://127.0.0.1:${s.port}/api`;

async function placeOrder(order: { id: string; amount: number; sku: string }) {
  const t = await dtx.createTransaction({
    name: `order-${order.id}-${Date.now()}`,
    consistency: "eventual",
    availability: "high",
    timeoutMs: 300_000,
    context: { order },
  });
  await t.addParticipant({ participantId: "payment_service", endpoint: url(payment), supports2pc: true, supportsSaga: true, compensationAction: "refund_payment" });
  await t.addParticipant({ participantId: "inventory_service", endpoint: url(inventory), supports2pc: true, supportsSaga: true, compensationAction: "release_inventory" });
  await t.addParticipant({ participantId: "shipping_service", endpoint: url(shipping), supports2pc: false, supportsSaga: true, compensationAction: "cancel_shipment" });
  return t.execute();
}

const ok = await placeOrder({ id: "123", amount: 99, sku: "A" });
console.log(`order 123: ${ok.protocol} ${ok.outcome}`, ok.participants.map((p) => `${p.participantId}=${p.status}`).join(" "));

const bad = await placeOrder({ id: "124", amount: 500, sku: "OVERSIZED" });
console.log(`order 124: ${bad.protocol} ${bad.outcome} (${bad.reason})`, bad.participants.map((p) => `${p.participantId}=${p.status}`).join(" "));

console.log(`charged: [${[...ledger.charged.keys()]}] reserved: [${[...ledger.reserved.keys()]}] shipped: [${[...ledger.shipped]}]`);
dtx.close();
for (const s of [payment, inventory, shipping]) s.stop(true);
