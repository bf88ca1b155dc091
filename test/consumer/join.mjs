// A service on sidecar A begins a transaction and a service on sidecar B joins it with tx.context,
// each through its own sidecar; then a joined callback that throws rolls the whole transaction back.
// Plain JavaScript importing dtx/client by name, so it runs under node (the build) and bun (the source).
//   node test/consumer/join.mjs <socket A> <socket B> <name>
import { connect } from "dtx/client";

const [socketA, socketB, name] = process.argv.slice(2);
const a = await connect({ socket: socketA });
const b = await connect({ socket: socketB });

await a.beginDistributed(name, async (tx) => {
  await tx.put(`a/${name}`, "from A");
  await b.join(tx.context, async (t) => {
    await t.put(`b/${name}`, "from B");
  });
});
const prepared = (await a.status(name)).state;
const committed = await a.commitDistributed(name);

const refused = await a
  .beginDistributed(`${name}-no`, async (tx) => {
    await tx.put(`a/${name}-no`, "never");
    await b.join(tx.context, async () => {
      throw new Error("B says no");
    });
  })
  .then(
    () => ({ rejected: false }),
    (e) => ({ rejected: true, message: e.message }),
  );
const refusedState = (await a.status(`${name}-no`)).state;

a.close();
b.close();
console.log(JSON.stringify({ prepared, committed, refused, refusedState }));
