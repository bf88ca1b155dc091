// The saga-cross path of `dtx bench`: an orchestrated Saga over three service
// participants, each registered on its own sidecar (service:pay@X,
// service:stock@Y, service:ship@Z), orchestrated from a fourth sidecar, W.
// Why a fourth: it is the seed's shape (the order service orchestrates and is
// none of its participants), and every step then crosses a link, so the row
// measures the cross path alone and its floor has one term per step; with W
// one of them, a third of the steps would be the local saga row again.
//
// Run directly, it checks the row's floor formula against what the sidecars
// count: a sequential run's fsyncs per transaction on each sidecar, from
// /metrics (dtx_wal_fsync_ms_count). Not run by npm test:
//   bun bench/saga-cross.ts [--transactions 500]
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Client, connect } from "../client/index.ts";
import { freePorts, waitForLinks } from "../test/helpers/federation.ts";
import { SidecarProcess, tempDir } from "../test/helpers/sidecar-process.ts";
import { load } from "./measure.ts";

/** Which service each participant sidecar serves, in Saga order. */
const services = [
  ["pay", "X"],
  ["stock", "Y"],
  ["ship", "Z"],
] as const;

export interface SagaCross {
  /** The orchestrating sidecar. */
  W: SidecarProcess;
  /** One orchestrated Saga over the three remote services; throws unless it committed. */
  op(w: number, i: number): Promise<void>;
  clients: Client[];
}

/**
 * Start W beside the running participant sidecars X, Y and Z (W lists them as peers; a link works both ways, so
 * they need not list W for a Saga), register each service on its own sidecar, and connect W's clients.
 */
export async function startSagaCross(root: string, participants: SidecarProcess[], secretFile: string): Promise<SagaCross> {
  const byId = new Map(participants.map((s) => [s.opts.id, s]));
  const [port] = freePorts(1);
  const W = new SidecarProcess({
    id: "W",
    dir: join(root, "W"),
    port,
    secretFile,
    peers: services.map(([, id]) => `${id}=ws://127.0.0.1:${byId.get(id)!.port}`),
  });
  await W.start();
  await waitForLinks(W, services.map(([, id]) => id));
  const clients: Client[] = [];
  for (const [service, id] of services) {
    const c = await connect({ socket: byId.get(id)!.socket });
    clients.push(c);
    await c.register(service, { action: () => null, compensate: () => null });
  }
  const orchestrators = await Promise.all(Array.from({ length: 8 }, () => connect({ socket: W.socket })));
  clients.push(...orchestrators);
  return {
    W,
    clients,
    async op(w, i) {
      const c = orchestrators[w % orchestrators.length];
      const t = await c.createTransaction({ name: `sx-${w}-${i}`, consistency: "eventual" });
      await Promise.all(services.map(([service, id]) => t.addParticipant({ participantId: service, endpoint: `service:${service}@${id}` })));
      const r = await t.execute();
      if (r.outcome !== "committed") throw new Error(r.reason ?? r.outcome);
    },
  };
}

/** The fsyncs a sidecar made since it started (the count of its dtx_wal_fsync_ms histogram). */
async function fsyncs(s: SidecarProcess): Promise<number> {
  const m = /^dtx_wal_fsync_ms_count(?:\{[^}]*\})? (\d+)$/m.exec(await (await fetch(`${s.baseUrl}/metrics`)).text());
  return m ? Number(m[1]) : 0;
}

if (import.meta.main) {
  const flag = process.argv.indexOf("--transactions");
  const n = flag > 0 ? Number(process.argv[flag + 1]) : 500;
  const root = tempDir("dtx-saga-cross-");
  const secretFile = join(root, "secret");
  writeFileSync(secretFile, "saga-cross-secret\n");
  const participants = services.map(([, id]) => new SidecarProcess({ id, dir: join(root, id), secretFile }));
  let run: SagaCross | undefined;
  try {
    await Promise.all(participants.map((s) => s.start()));
    run = await startSagaCross(root, participants, secretFile);
    const all = [run.W, ...participants];
    await load(run.op, 4, 1000); // warm-up
    const before = await Promise.all(all.map(fsyncs));
    let done = 0;
    for (let i = 0; i < n; i++) {
      await run.op(0, i); // sequential: nothing shares a group commit with another transaction
      done++;
    }
    const after = await Promise.all(all.map(fsyncs));
    const perTxn = Object.fromEntries(all.map((s, k) => [s.opts.id, Math.round(((after[k] - before[k]) / done) * 100) / 100]));
    const total = Math.round(Object.values(perTxn).reduce((a, b) => a + b, 0) * 100) / 100;
    console.log(JSON.stringify({ transactions: done, fsyncsPerTransaction: perTxn, total, formula: "W 4 (o.begin; each step's o.step, the last with o.end) + 2 on each of X, Y, Z (the sent mark, the result) = 10" }));
  } finally {
    for (const c of run?.clients ?? []) c.close();
    await Promise.all([run?.W, ...participants].map((s) => s?.cleanup()));
    rmSync(root, { recursive: true, force: true });
  }
}
