// Ad-hoc: one sidecar, begin + one put + commit. `bun bench/local.ts`
import { connect } from "../client/index.ts";
import { SidecarProcess } from "../test/helpers/sidecar-process.ts";
import { fsyncFloor, load } from "./measure.ts";

const sc = await new SidecarProcess({ id: "bench" }).start();
try {
  const floor = fsyncFloor(sc.dir);
  const clients = await Promise.all(Array.from({ length: 8 }, () => connect({ socket: sc.socket })));
  const txn = (w: number, i: number) => {
    const c = clients[w % clients.length];
    const name = `b-${w}-${i}`;
    return c.beginDistributed(name, (tx) => tx.put(`k/${w}/${i % 100}`, i)).then(() => c.commitDistributed(name));
  };
  await load(txn, 4, 500); // warm-up
  const c1 = await load(txn, 1, 3000);
  const c64 = await load(txn, 64, 3000);
  console.log(JSON.stringify({ fsyncP50Ms: floor.p50, c1: c1.latency, c1PerSec: c1.perSec, c64PerSec: c64.perSec, c64: c64.latency, errors: c1.errors + c64.errors }));
  for (const c of clients) c.close();
} finally {
  await sc.cleanup();
}
