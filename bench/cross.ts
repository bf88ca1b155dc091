// Ad-hoc: cross-sidecar 2PC between two real sidecar processes federated over
// WebSocket. One transaction = begin on A + put, join on B + put, prepare,
// commit. Reports p50/p99 latency at concurrency 1 and throughput at 64.
// Not run by npm test: `bun bench/cross.ts [--seconds 5]`
import { connect } from "../client/index.ts";
import { freePorts, waitForLinks } from "../test/helpers/federation.ts";
import { SidecarProcess } from "../test/helpers/sidecar-process.ts";
import { fsyncFloor, load } from "./measure.ts";

const secondsArg = process.argv.indexOf("--seconds");
const durationMs = (secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 5) * 1000;
const [portA, portB] = freePorts(2);
const A = new SidecarProcess({ id: "A", port: portA, peers: [`B=ws://127.0.0.1:${portB}`] });
const B = new SidecarProcess({ id: "B", port: portB, peers: [`A=ws://127.0.0.1:${portA}`] });

try {
  await Promise.all([A.start(), B.start()]);
  await Promise.all([waitForLinks(A, ["B"]), waitForLinks(B, ["A"])]);
  const floor = fsyncFloor(A.dir);
  const as = await Promise.all(Array.from({ length: 8 }, () => connect({ socket: A.socket })));
  const bs = await Promise.all(Array.from({ length: 8 }, () => connect({ socket: B.socket })));
  // Every transaction writes its own keys, so none conflict: this measures the protocol, not contention.
  let seq = 0;
  const txn = async (w: number) => {
    const [a, b] = [as[w % as.length], bs[w % bs.length]];
    const i = seq++;
    const name = `x-${i}`;
    await a.beginDistributed(name, async (tx) => {
      await tx.put(`a/${i}`, i);
      await b.join(tx.context, (t2) => t2.put(`b/${i}`, i));
    });
    await a.commitDistributed(name);
  };
  await load(txn, 4, 500); // warm-up
  const c1 = await load(txn, 1, durationMs);
  const c64 = await load(txn, 64, durationMs);
  console.log(JSON.stringify({ bench: "cross-sidecar 2pc", fsyncP50Ms: floor.p50, c1: c1.latency, c1PerSec: c1.perSec, c64PerSec: c64.perSec, c64: c64.latency, errors: c1.errors + c64.errors }));
  for (const c of [...as, ...bs]) c.close();
} finally {
  await Promise.all([A.cleanup(), B.cleanup()]);
}
