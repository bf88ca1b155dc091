// Service-callback participants (dtx.register) and the sub-transaction
// barrier in front of them. The barrier keeps, durably, which operations of a
// (transaction, participant) finished, so that:
//   - a retried or duplicated call runs the handler at most once (the
//     recorded result is returned instead);
//   - a compensation (or abort) that arrives before its action (prepare) was
//     ever sent to the service records a no-op and does not call the handler
//     ("null compensation"); one whose action was sent but not answered (the
//     service hung up, the sidecar restarted) calls the handler, which finds
//     nothing or something to undo;
//   - an action (or prepare) that arrives after its compensation (abort) is
//     refused ("suspension").
// Operations of one (transaction, participant) run one at a time, in arrival
// order: an abort that arrives while its prepare's handler still runs waits
// for it, and then undoes what it did.
import type { Wal } from "../wal/wal.ts";
import type { BarrierOp, StepOp } from "../wal/orchestration-records.ts";
import type { ParticipantCall } from "../txn/types.ts";
import type { CallOutcome } from "./outcome.ts";

export interface CallbackTarget {
  /** Send a callback frame to a client connection; false if it is gone. */
  push(conn: number, frame: Record<string, unknown>): boolean;
}

const undoOf: Partial<Record<StepOp, StepOp>> = { execute: "compensate", prepare: "abort" };
const doOf: Partial<Record<StepOp, StepOp>> = { compensate: "execute", abort: "prepare" };

export class ServiceParticipants {
  private services = new Map<string, number>();
  private calls = new Map<number, { conn: number; resolve: (o: CallOutcome) => void }>();
  private inflight = new Map<string, Promise<CallOutcome>>();
  /** Per (transaction, participant): the end of the queue of its operations. */
  private turns = new Map<string, Promise<void>>();
  private nextCb = 1;

  constructor(
    private readonly wal: Wal,
    private readonly target: CallbackTarget,
  ) {}

  register(service: string, conn: number): void {
    this.services.set(service, conn);
  }

  disconnected(conn: number): void {
    for (const [s, c] of this.services) if (c === conn) this.services.delete(s);
    for (const [cb, call] of this.calls) {
      if (call.conn !== conn) continue;
      this.calls.delete(cb);
      call.resolve({ outcome: "retry", error: "the service disconnected before it answered" });
    }
  }

  /** A client answered callback `cb`. */
  answer(cb: number, a: { ok: boolean; result?: unknown; error?: string; retryable?: boolean }): void {
    const call = this.calls.get(cb);
    if (!call) return; // duplicate answer
    this.calls.delete(cb);
    call.resolve(a.ok ? { outcome: "ok", result: a.result } : { outcome: a.retryable === false ? "fail" : "retry", error: a.error });
  }

  /**
   * A retry of a call whose handler is still running joins that run instead of
   * starting another: the in-flight mark lasts as long as the handler, not as
   * long as the caller is willing to wait (call.timeoutMs).
   */
  call(call: ParticipantCall): Promise<CallOutcome> {
    const key = `${call.name}/${call.participantId}`;
    const flightKey = `${key}/${call.op}`;
    let running = this.inflight.get(flightKey);
    if (!running) {
      running = this.inTurn(key, () => this.throughBarrier(key, call)).finally(() => this.inflight.delete(flightKey));
      this.inflight.set(flightKey, running);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<CallOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: "retry", error: `${call.endpoint} did not answer ${call.op} within ${call.timeoutMs} ms` }), call.timeoutMs);
    });
    return Promise.race([running, timeout]).finally(() => clearTimeout(timer));
  }

  /** Run fn after every operation of `key` that arrived before it has finished. */
  private inTurn(key: string, fn: () => Promise<CallOutcome>): Promise<CallOutcome> {
    const run = (this.turns.get(key) ?? Promise.resolve()).then(fn);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.turns.set(key, settled);
    void settled.then(() => {
      if (this.turns.get(key) === settled) this.turns.delete(key);
    });
    return run;
  }

  private async throughBarrier(key: string, call: ParticipantCall): Promise<CallOutcome> {
    const entry = this.wal.barrierEntry(key);
    const done = entry?.ops[call.op];
    if (done && done.outcome !== "sent") return recorded(done);
    const undo = undoOf[call.op];
    if (undo && entry?.ops[undo]) {
      await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "refused", at: Date.now() }]);
      return { outcome: "fail", error: `refused by the barrier: ${call.participantId} was already ${undo === "compensate" ? "compensated" : "aborted"}` };
    }
    const original = doOf[call.op];
    const ran = original ? entry?.ops[original]?.outcome : undefined;
    if (original && ran !== "ok" && ran !== "sent") {
      // Null compensation: the action was never sent here, or failed; record it so a late action is refused.
      await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "noop", at: Date.now() }]);
      return { outcome: "ok", result: null };
    }
    const o = await this.invoke(key, call, undo !== undefined);
    if (o.outcome === "ok") await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "ok", result: o.result ?? null, at: Date.now() }]);
    // A definitive no to an action or prepare is kept, so a duplicate gets it too and its undo is a no-op.
    else if (o.outcome === "fail" && undo) await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "failed", error: o.error, at: Date.now() }]);
    return o;
  }

  /** Push the call to its service. An action or prepare is durably marked sent first: from then on it may have run. */
  private async invoke(key: string, call: ParticipantCall, markSent: boolean): Promise<CallOutcome> {
    const service = call.endpoint.slice("service:".length);
    const notConnected = (): CallOutcome => ({ outcome: "retry", reached: false, error: `service ${service} is not connected to this sidecar (dtx.register("${service}", …))` });
    if (!this.services.has(service)) return notConnected();
    if (markSent) await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "sent", at: Date.now() }]);
    const conn = this.services.get(service);
    if (conn === undefined) return notConnected();
    const cb = this.nextCb++;
    return new Promise<CallOutcome>((resolve) => {
      this.calls.set(cb, { conn, resolve });
      const sent = this.target.push(conn, {
        op: "callback",
        cb,
        service,
        method: call.op,
        name: call.name,
        participantId: call.participantId,
        idempotencyKey: call.idempotencyKey,
        payload: call.payload ?? null,
        context: call.context ?? null,
        action: call.action ?? null,
      });
      if (!sent) {
        this.calls.delete(cb);
        resolve({ outcome: "retry", reached: false, error: `service ${service} disconnected before the call was sent` });
      }
    });
  }
}

function recorded(done: BarrierOp): CallOutcome {
  switch (done.outcome) {
    case "ok":
    case "noop":
      return { outcome: "ok", result: done.result ?? null };
    case "refused":
      return { outcome: "fail", error: "refused by the barrier" };
    case "failed":
      return { outcome: "fail", error: done.error ?? "failed" };
    case "sent":
      throw new Error("a call that was only sent has no recorded answer");
  }
}
