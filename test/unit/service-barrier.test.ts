// The sub-transaction barrier in front of service callbacks
// (src/participants/service.ts), over an in-memory log and a fake service
// connection that records the frames pushed to it and answers when told.
import { describe, expect, test } from "bun:test";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import { ServiceParticipants } from "../../src/participants/service.ts";
import type { ParticipantCall } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { StepOp } from "../../src/wal/orchestration-records.ts";

const conn = 7;

class FakeService {
  readonly frames: { cb: number; method: string }[] = [];
  connected = true;
  readonly wal = new MemoryWal(true);
  sidecar = this.boot();

  /** A fresh ServiceParticipants over the same log: the sidecar restarted and the service registered again. */
  boot(): ServiceParticipants {
    const s = new ServiceParticipants(this.wal, { push: (_c, f) => this.connected && this.frames.push(f as { cb: number; method: string }) > 0 });
    s.register("vault", conn);
    this.sidecar = s;
    return s;
  }

  call(op: StepOp): Promise<CallOutcome> {
    const c: ParticipantCall = { name: "t", index: 0, participantId: "vault", endpoint: "service:vault", op, callId: 1, idempotencyKey: `t/vault/${op}`, timeoutMs: 60_000 };
    return this.sidecar.call(c);
  }

  methods(): string[] {
    return this.frames.map((f) => f.method);
  }

  /** Answer the last frame pushed for `method`. */
  answer(method: string, a: { ok: boolean; result?: unknown; error?: string; retryable?: boolean }): void {
    const f = this.frames.findLast((x) => x.method === method);
    if (!f) throw new Error(`no ${method} frame was pushed; frames: ${this.methods().join(",")}`);
    this.sidecar.answer(f.cb, a);
  }

  /** Resolve once `method` has been pushed (the barrier appends to the log before it pushes). */
  async pushed(method: string): Promise<void> {
    for (let k = 0; k < 100 && !this.methods().includes(method); k++) await Promise.resolve();
    expect(this.methods()).toContain(method);
  }
}

describe("the barrier in front of a service's prepare and abort", () => {
  test("an abort that arrives while its prepare's handler runs waits for it, then calls the abort handler once", async () => {
    const svc = new FakeService();
    const prepare = svc.call("prepare");
    await svc.pushed("prepare");
    const abort = svc.call("abort");
    for (let k = 0; k < 20; k++) await Promise.resolve();
    expect(svc.methods()).toEqual(["prepare"]); // the abort waits for the prepare
    svc.answer("prepare", { ok: true });
    expect(await prepare).toMatchObject({ outcome: "ok" });
    await svc.pushed("abort");
    svc.answer("abort", { ok: true });
    expect(await abort).toMatchObject({ outcome: "ok" });
    expect(svc.methods()).toEqual(["prepare", "abort"]);
  });

  test("a prepare that arrives after its abort is refused and never reaches the service", async () => {
    const svc = new FakeService();
    expect(await svc.call("abort")).toMatchObject({ outcome: "ok", result: null });
    expect(await svc.call("prepare")).toMatchObject({ outcome: "fail", error: expect.stringContaining("refused by the barrier") });
    expect(svc.methods()).toEqual([]);
  });

  test("a prepare the service never answered (it hung up) may have run: its abort calls the abort handler", async () => {
    const svc = new FakeService();
    const prepare = svc.call("prepare");
    await svc.pushed("prepare");
    svc.sidecar.disconnected(conn);
    expect(await prepare).toMatchObject({ outcome: "retry" });
    expect((await prepare).reached).toBeUndefined();
    svc.sidecar.register("vault", conn);
    const abort = svc.call("abort");
    await svc.pushed("abort");
    svc.answer("abort", { ok: true });
    expect(await abort).toMatchObject({ outcome: "ok" });
  });

  test("after a sidecar restart, a prepare that was sent and never answered may have run: its abort calls the abort handler", async () => {
    const svc = new FakeService();
    void svc.call("prepare");
    await svc.pushed("prepare");
    svc.boot();
    const abort = svc.call("abort");
    await svc.pushed("abort");
    svc.answer("abort", { ok: true });
    expect(await abort).toMatchObject({ outcome: "ok" });
  });

  test("a prepare for a service that is not connected provably never reached it; its abort is a no-op that needs no service", async () => {
    const svc = new FakeService();
    svc.sidecar.disconnected(conn);
    expect(await svc.call("prepare")).toMatchObject({ outcome: "retry", reached: false });
    expect(await svc.call("abort")).toMatchObject({ outcome: "ok", result: null });
    expect(svc.methods()).toEqual([]);
  });

  test("a frame that could not be pushed (the connection just went) never reached the service", async () => {
    const svc = new FakeService();
    svc.connected = false;
    expect(await svc.call("prepare")).toMatchObject({ outcome: "retry", reached: false });
  });

  test("a prepare that voted no is kept: a duplicate gets the no without calling the handler, and the abort is a no-op", async () => {
    const svc = new FakeService();
    const prepare = svc.call("prepare");
    await svc.pushed("prepare");
    svc.answer("prepare", { ok: false, error: "insufficient funds", retryable: false });
    expect(await prepare).toMatchObject({ outcome: "fail", error: "insufficient funds" });
    expect(await svc.call("prepare")).toMatchObject({ outcome: "fail", error: "insufficient funds" });
    expect(await svc.call("abort")).toMatchObject({ outcome: "ok", result: null });
    expect(svc.methods()).toEqual(["prepare"]);
  });
});
