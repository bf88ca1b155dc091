// Orchestrated transactions (createTransaction → addParticipant → execute)
// against real HTTP participant servers and a real sidecar process.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Client, connect } from "../../client/index.ts";
import { duplicatingProxy, HttpParticipant, refusingEndpoint } from "../helpers/http-participant.ts";
import { SidecarProcess, waitFor } from "../helpers/sidecar-process.ts";

let sc: SidecarProcess;
let dtx: Client;
const servers: { stop(): void }[] = [];
beforeAll(async () => {
  sc = await new SidecarProcess({ id: "orch" }).start();
  dtx = await connect({ socket: sc.socket });
});
afterAll(async () => {
  dtx?.close();
  for (const s of servers) s.stop();
  await sc?.cleanup();
});
function participant(id: string, behaviour = {}): HttpParticipant {
  const p = new HttpParticipant(id, behaviour);
  servers.push(p);
  return p;
}
const fast = { attempts: 100, backoffMs: 10, maxBackoffMs: 50, budgetMs: 20_000 };
/** The dtx CLI against this test's sidecar. */
const cli = (args: string[]) => Bun.spawnSync([process.execPath, "sidecar/cli.ts", ...args, "--socket", sc.socket]);

describe("orchestrated 2PC over HTTP participants", () => {
  test("strong consistency picks 2PC; one participant votes abort → every participant is aborted", async () => {
    const ps = [participant("pay"), participant("stock", { vote: "abort" }), participant("ship")];
    const t = await dtx.createTransaction({ name: "2pc-abort", consistency: "strong", availability: "medium", context: { order: 1 } });
    for (const p of ps) await t.addParticipant({ participantId: p.id, endpoint: p.endpoint, supports2pc: true, supportsSaga: true });
    const r = await t.execute();
    expect(r.protocol).toBe("2pc");
    expect(r.outcome).toBe("rolled_back");
    expect(r.reason).toContain("stock");
    for (const p of ps) expect(p.appliedOps("commit")).toEqual([]);
    expect(ps[0].appliedOps("abort")).toEqual(["abort:2pc-abort"]);
    expect(ps[2].appliedOps("abort")).toEqual(["abort:2pc-abort"]);
    expect(ps[1].calls[0].body.context).toEqual({ order: 1 });
  });

  test("a participant down during commit is retried until it is back; the commit is applied exactly once", async () => {
    const up = participant("up");
    const flaky = participant("flaky", { unavailable: new Set(["commit"]) });
    const t = await dtx.createTransaction({ name: "2pc-retry", consistency: "immediate" });
    await t.addParticipant({ participantId: "up", endpoint: up.endpoint, retryPolicy: fast });
    await t.addParticipant({ participantId: "flaky", endpoint: flaky.endpoint, retryPolicy: fast });
    const result = t.execute();
    await flaky.until(() => flaky.calls.filter((c) => c.op === "commit").length >= 3, 10_000, "three refused commits");
    expect((await t.getStatus()).state).toBe("committing");
    flaky.behaviour.unavailable = undefined; // back up
    const r = await result;
    expect(r.outcome).toBe("committed");
    expect(flaky.appliedOps("commit")).toEqual(["commit:2pc-retry"]);
    expect(up.appliedOps("commit")).toEqual(["commit:2pc-retry"]);
  });

  test("a slow /prepare that times out on every attempt is sent /abort with the abort's idempotency key; nothing commits", async () => {
    const pay = participant("pay2");
    const slow = participant("slowprep", { hold: new Set(["prepare"]) });
    const t = await dtx.createTransaction({ name: "2pc-slow", consistency: "immediate" });
    await t.addParticipant({ participantId: "pay2", endpoint: pay.endpoint, retryPolicy: fast });
    await t.addParticipant({ participantId: "slowprep", endpoint: slow.endpoint, retryPolicy: { attempts: 2, backoffMs: 10, maxBackoffMs: 20, budgetMs: 5_000, callTimeoutMs: 100 } });
    const r = await t.execute();
    expect(r.outcome).toBe("rolled_back");
    expect(r.reason).toContain("slowprep prepare gave up after 2 attempts");
    const aborts = slow.calls.filter((c) => c.op === "abort");
    expect(aborts.map((c) => c.key)).toEqual(["2pc-slow/slowprep/abort"]);
    expect(pay.appliedOps("abort")).toEqual(["abort:2pc-slow"]);
    for (const p of [pay, slow]) expect(p.calls.filter((c) => c.op === "commit")).toEqual([]);
    slow.release();
  });

  test("a commit that gives up on one participant does not stop the others; the transaction ends failed naming it", async () => {
    const down = participant("cdown", { unavailable: new Set(["commit"]) });
    const late = participant("clate", { hold: new Set(["commit"]) });
    const t = await dtx.createTransaction({ name: "2pc-commit-gives-up", consistency: "immediate" });
    await t.addParticipant({ participantId: "cdown", endpoint: down.endpoint, retryPolicy: { attempts: 3, backoffMs: 10, maxBackoffMs: 20, budgetMs: 5_000 } });
    await t.addParticipant({ participantId: "clate", endpoint: late.endpoint, retryPolicy: fast });
    const result = t.execute();
    await down.until(() => down.calls.filter((c) => c.op === "commit").length === 3, 10_000, "three refused commits");
    await waitFor(async () => ((await t.getStatus()).participants[0] as { status: string }).status === "commit_failed", 10_000, "cdown's commit to give up");
    expect((await t.getStatus()).state).toBe("committing");
    late.release();
    const r = await result;
    expect(r.outcome).toBe("failed");
    expect(r.reason).toContain("cdown commit gave up after 3 attempts");
    expect(r.reason).not.toContain("clate");
    expect(late.appliedOps("commit")).toEqual(["commit:2pc-commit-gives-up"]);
    expect(r.participants.map((p) => p.status)).toEqual(["commit_failed", "committed"]);
    expect(cli(["resolve", "2pc-commit-gives-up", "--commit"]).exitCode).toBe(0); // the operator, after committing cdown by hand
  });

  test("immediate consistency with a participant that lacks 2PC fails with PROTOCOL_UNSUPPORTED before anything runs", async () => {
    const p = participant("legacy");
    const t = await dtx.createTransaction({ name: "unsupported", consistency: "immediate" });
    await t.addParticipant({ participantId: "legacy", endpoint: p.endpoint, supports2pc: false });
    const err = await t.execute().catch((e) => e);
    expect(err.code).toBe("PROTOCOL_UNSUPPORTED");
    expect(p.calls).toEqual([]);
  });
});

describe("Sagas", () => {
  async function fourSteps(name: string, endpoints: string[]) {
    const t = await dtx.createTransaction({ name, consistency: "eventual", availability: "high" });
    for (let i = 0; i < 4; i++) {
      await t.addParticipant({ participantId: `s${i + 1}`, endpoint: endpoints[i], compensationAction: `undo-${i + 1}`, retryPolicy: fast });
    }
    return t;
  }

  test("the third of four steps fails → steps two and one are compensated, in that order, exactly once each", async () => {
    const ps = [participant("a"), participant("b"), participant("c", { failExecute: true }), participant("d")];
    const t = await fourSteps("saga-fail", ps.map((p) => p.endpoint));
    const r = await t.execute();
    expect(r.protocol).toBe("saga");
    expect(r.outcome).toBe("compensated");
    const compensations = ps.flatMap((p) => p.applied.filter((c) => c.op === "compensate").map((c) => ({ p: p.id, seq: c.seq })));
    expect(compensations.sort((x, y) => x.seq - y.seq).map((c) => c.p)).toEqual(["b", "a"]);
    expect(ps[1].calls.filter((c) => c.op === "compensate").length).toBe(1);
    expect(ps[0].calls.filter((c) => c.op === "compensate").length).toBe(1);
    expect(ps[0].calls.at(-1)!.body.compensation_action).toBe("undo-1");
    expect(ps[3].calls).toEqual([]);
    expect(ps[2].appliedOps("compensate")).toEqual([]);
  });

  test("with every message delivered twice, each step and compensation is still applied exactly once", async () => {
    const ps = [participant("da"), participant("db"), participant("dc", { failExecute: true }), participant("dd")];
    const proxies = ps.map((p) => duplicatingProxy(p.endpoint));
    servers.push(...proxies);
    const t = await fourSteps("saga-dup", proxies.map((p) => p.url));
    const r = await t.execute();
    expect(r.outcome).toBe("compensated");
    expect(ps[0].appliedOps()).toEqual(["execute:saga-dup", "compensate:saga-dup"]);
    expect(ps[1].appliedOps()).toEqual(["execute:saga-dup", "compensate:saga-dup"]);
    expect(ps[0].calls.length).toBe(4); // delivered twice, applied once
  });

  test("kill -9 mid-compensation: after restart the compensations finish, each applied exactly once, newest first", async () => {
    const ps = [participant("ka"), participant("kb", { hold: new Set(["compensate"]) }), participant("kc", { failExecute: true }), participant("kd")];
    const t = await fourSteps("saga-crash", ps.map((p) => p.endpoint));
    void t.execute().catch(() => {});
    await ps[1].until(() => ps[1].calls.some((c) => c.op === "compensate"), 10_000, "compensation of step two to start");
    await sc.kill9();
    ps[1].release(); // the held call is answered to a dead sidecar; its effect is applied once
    await sc.start();
    dtx.close();
    dtx = await connect({ socket: sc.socket });
    await waitFor(async () => (await dtx.status("saga-crash")).state === "compensated", 15_000, "saga-crash compensated after restart");
    expect(ps[1].appliedOps("compensate")).toEqual(["compensate:saga-crash"]);
    expect(ps[0].appliedOps("compensate")).toEqual(["compensate:saga-crash"]);
    expect(ps[1].applied.find((c) => c.op === "compensate")!.seq).toBeLessThan(ps[0].applied.find((c) => c.op === "compensate")!.seq);
    expect(ps[2].appliedOps("compensate")).toEqual([]);
  }, 60_000);

  test("a compensation that always fails ends in failed after its budget; dtx list --state failed shows it and dtx resolve closes it", async () => {
    const a = participant("fa", { unavailable: new Set(["compensate"]) });
    const b = participant("fb", { failExecute: true });
    const t = await dtx.createTransaction({ name: "saga-stuck", consistency: "eventual" });
    await t.addParticipant({ participantId: "fa", endpoint: a.endpoint, retryPolicy: { attempts: 4, backoffMs: 10, maxBackoffMs: 20, budgetMs: 5_000 } });
    await t.addParticipant({ participantId: "fb", endpoint: b.endpoint });
    const r = await t.execute();
    expect(r.outcome).toBe("failed");
    expect(r.reason).toContain("gave up after 4 attempts");
    expect(a.calls.filter((c) => c.op === "compensate").length).toBe(4);
    const listed = cli(["list", "--state", "failed", "--json"]);
    expect(listed.exitCode).toBe(0);
    expect(JSON.parse(listed.stdout.toString()).map((x: { name: string }) => x.name)).toContain("saga-stuck");
    const failedGauge = async () => Number(/^dtx_transactions\{state="failed"\} (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${sc.port}/metrics`)).text())?.[1] ?? 0);
    expect(await failedGauge()).toBe(1);
    const refused = cli(["resolve", "saga-stuck", "--commit"]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr.toString()).toContain("INVALID_STATE");
    const resolved = cli(["resolve", "saga-stuck", "--rollback"]);
    expect(resolved.exitCode).toBe(0);
    expect((await dtx.status("saga-stuck")).state).toBe("compensated");
    const after = JSON.parse(cli(["list", "--state", "failed", "--json"]).stdout.toString()).map((x: { name: string }) => x.name);
    expect(after).not.toContain("saga-stuck");
    expect(await failedGauge()).toBe(0);
  });
});

describe("Sagas whose steps give up or are never reached", () => {
  const few = { attempts: 3, backoffMs: 10, maxBackoffMs: 20, budgetMs: 20_000, callTimeoutMs: 5_000 };

  test("a compensation that gives up does not stop the others: the earlier steps are compensated and the Saga ends failed naming it", async () => {
    const ps = [participant("go0"), participant("go1", { unavailable: new Set(["compensate"]) }), participant("go2", { failExecute: true })];
    const t = await dtx.createTransaction({ name: "saga-goes-on", consistency: "eventual" });
    for (const p of ps) await t.addParticipant({ participantId: p.id, endpoint: p.endpoint, retryPolicy: few });
    const r = await t.execute();
    expect(r.outcome).toBe("failed");
    expect(r.reason).toContain("go1 compensate gave up after 3 attempts");
    expect(ps[0].appliedOps("compensate")).toEqual(["compensate:saga-goes-on"]);
    expect(r.participants.map((p) => p.status)).toEqual(["compensated", "compensation_failed", "failed"]);
    expect(cli(["resolve", "saga-goes-on", "--rollback"]).exitCode).toBe(0);
  });

  const unreachable = [
    ["refuses connections", refusingEndpoint],
    ["has no DNS name", () => "http://dtx-participant.invalid/never"],
    ["is a service not registered on the sidecar", () => "service:nobody-registered"],
  ] as const;
  for (const [k, [what, endpoint]] of unreachable.entries()) {
    test(`a step whose participant ${what} was never reached: the earlier step is compensated and the Saga ends compensated, not failed`, async () => {
      const first = participant(`nr-${k}`);
      const name = `saga-unreached-${k}`;
      const t = await dtx.createTransaction({ name, consistency: "eventual" });
      await t.addParticipant({ participantId: "first", endpoint: first.endpoint, retryPolicy: few });
      await t.addParticipant({ participantId: "gone", endpoint: endpoint(), retryPolicy: few });
      const r = await t.execute();
      expect(r.outcome).toBe("compensated");
      expect(r.reason).toContain("gone execute never reached the participant in 3 attempts");
      expect(first.appliedOps()).toEqual([`execute:${name}`, `compensate:${name}`]);
      expect(r.participants.map((p) => p.status)).toEqual(["compensated", "not_reached"]);
    });
  }
});

describe("names stay taken while not final", () => {
  test("a failed Saga's name gets NAME_IN_USE from createTransaction and beginDistributed until dtx resolve closes it, then is free", async () => {
    const a = participant("nf0", { unavailable: new Set(["compensate"]) });
    const b = participant("nf1", { failExecute: true });
    const t = await dtx.createTransaction({ name: "held-name", consistency: "eventual" });
    await t.addParticipant({ participantId: "nf0", endpoint: a.endpoint, retryPolicy: { attempts: 2, backoffMs: 10, maxBackoffMs: 20, budgetMs: 5_000 } });
    await t.addParticipant({ participantId: "nf1", endpoint: b.endpoint });
    expect((await t.execute()).outcome).toBe("failed");
    expect((await dtx.createTransaction({ name: "held-name", consistency: "eventual" }).catch((e) => e)).code).toBe("NAME_IN_USE");
    expect((await dtx.beginDistributed("held-name", (tx) => tx.put("held/k", 1)).catch((e) => e)).code).toBe("NAME_IN_USE");
    expect((await dtx.status("held-name")).state).toBe("failed");
    expect(cli(["resolve", "held-name", "--rollback"]).exitCode).toBe(0);
    expect((await dtx.status("held-name")).state).toBe("compensated");
    const again = await dtx.createTransaction({ name: "held-name", consistency: "eventual" });
    expect(again.name).toBe("held-name");
  });
});

describe("service callbacks and the built-in store", () => {
  test("a Saga over registered service callbacks and the store compensates both when a later step fails", async () => {
    const svc = await connect({ socket: sc.socket });
    const log: string[] = [];
    await svc.register("payments", {
      action: (c) => void log.push(`charge:${c.name}`),
      compensate: (c) => void log.push(`refund:${c.name}`),
    });
    await svc.register("shipping", {
      action: () => {
        throw new Error("no courier available");
      },
      compensate: (c) => void log.push(`cancel-shipment:${c.name}`),
    });
    await dtx.beginDistributed("stock-seed", (tx) => tx.put("stock/A", 5));
    await dtx.commitDistributed("stock-seed");
    const t = await dtx.createTransaction({ name: "svc-saga", consistency: "eventual" });
    await t.addParticipant({ participantId: "payments", endpoint: "service:payments", supports2pc: false });
    await t.addParticipant({ participantId: "inventory", endpoint: "store:", payload: { put: { "stock/A": 4, "reserved/svc-saga": 1 } } });
    await t.addParticipant({ participantId: "shipping", endpoint: "service:shipping" });
    const r = await t.execute();
    expect(r.outcome).toBe("compensated");
    expect(r.reason).toContain("no courier available");
    expect(log).toEqual(["charge:svc-saga", "refund:svc-saga"]);
    expect(await dtx.get("stock/A")).toBe(5);
    expect(await dtx.get("reserved/svc-saga")).toBeUndefined();
    svc.close();
  });

  test("TCC over a service: prepare, then commit, each handler called once", async () => {
    const svc = await connect({ socket: sc.socket });
    const calls: string[] = [];
    await svc.register("ledger", { prepare: () => void calls.push("prepare"), commit: () => void calls.push("commit"), abort: () => void calls.push("abort") });
    const t = await dtx.createTransaction({ name: "tcc-1", consistency: "immediate" });
    await t.addParticipant({ participantId: "ledger", endpoint: "service:ledger" });
    const r = await t.execute();
    expect(r).toMatchObject({ outcome: "committed", protocol: "2pc" });
    expect(calls).toEqual(["prepare", "commit"]);
    svc.close();
  });

  test("a service's prepare that outlives its timeouts is aborted after it froze the amount: the balance ends where it began, the abort ran once", async () => {
    // DTM's TestTccBarrierDisorder: a Try that outlives its timeout must not leave the amount frozen.
    const opening = 100;
    const account = { available: opening, frozen: 0 };
    const runs = { prepare: 0, abort: 0, commit: 0 };
    const svc = await connect({ socket: sc.socket });
    await svc.register("vault", {
      prepare: async (c) => {
        runs.prepare++;
        // Slower than callTimeoutMs × attempts: it freezes only once the sidecar gave up on it and rolls back.
        await waitFor(async () => (await dtx.status(c.name)).state === "rolling_back", 10_000, "the sidecar to give up on the prepare");
        account.available -= 30;
        account.frozen += 30;
      },
      commit: () => void runs.commit++,
      abort: () => {
        runs.abort++;
        account.available += account.frozen;
        account.frozen = 0;
      },
    });
    const t = await dtx.createTransaction({ name: "tcc-slow-prepare", consistency: "immediate" });
    await t.addParticipant({ participantId: "vault", endpoint: "service:vault", retryPolicy: { attempts: 3, backoffMs: 10, maxBackoffMs: 20, budgetMs: 10_000, callTimeoutMs: 300 } });
    const r = await t.execute();
    expect(r.outcome).toBe("rolled_back");
    expect(r.reason).toContain("vault prepare gave up after 3 attempts");
    expect(account).toEqual({ available: opening, frozen: 0 });
    expect(runs).toEqual({ prepare: 1, abort: 1, commit: 0 });
    svc.close();
  });

  test("a slow service action is not run twice when the sidecar's call times out and is retried", async () => {
    const svc = await connect({ socket: sc.socket });
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await svc.register("slow", { action: async () => {
      runs++;
      await gate;
    }, compensate: () => {} });
    const t = await dtx.createTransaction({ name: "slow-1", consistency: "eventual" });
    await t.addParticipant({ participantId: "slow", endpoint: "service:slow", retryPolicy: { ...fast, callTimeoutMs: 50 } });
    const result = t.execute();
    await waitFor(() => runs === 1, 5_000, "the action to start");
    // Let the sidecar time out and retry several times while the first call still runs.
    await waitFor(async () => ((await t.getStatus()).participants[0] as { error: string | null }).error?.includes("did not answer") ?? false, 5_000, "a timed-out call");
    release();
    expect((await result).outcome).toBe("committed");
    expect(runs).toBe(1);
    svc.close();
  });
});
