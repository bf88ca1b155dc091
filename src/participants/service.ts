// Service-callback participants (dtx.register) and the sub-transaction
// barrier in front of them. The barrier keeps, durably, which operations of a
// (transaction, participant) finished, so that:
//   - a retried or duplicated call runs the handler at most once (the
//     recorded result is returned instead);
//   - a compensation (or abort) that arrives before its action ran records a
//     no-op and does not call the handler ("null compensation");
//   - an action (or prepare) that arrives after its compensation is refused
//     ("suspension").
import type { Wal } from "../wal/wal.ts";
import type { StepOp } from "../wal/orchestration-records.ts";
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
      running = this.throughBarrier(key, call).finally(() => this.inflight.delete(flightKey));
      this.inflight.set(flightKey, running);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<CallOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: "retry", error: `${call.endpoint} did not answer ${call.op} within ${call.timeoutMs} ms` }), call.timeoutMs);
    });
    return Promise.race([running, timeout]).finally(() => clearTimeout(timer));
  }

  private async throughBarrier(key: string, call: ParticipantCall): Promise<CallOutcome> {
    const original = doOf[call.op];
    // A compensation waits for its action if that is still running, then sees its outcome.
    const running = original ? this.inflight.get(`${key}/${original}`) : undefined;
    if (running) await running.catch(() => undefined);
    const entry = this.wal.barrierEntry(key);
    const done = entry?.ops[call.op];
    if (done) return done.outcome === "refused" ? { outcome: "fail", error: "refused by the barrier" } : { outcome: "ok", result: done.result };
    const undo = undoOf[call.op];
    if (undo && entry?.ops[undo]) {
      await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "refused", at: Date.now() }]);
      return { outcome: "fail", error: `refused by the barrier: ${call.participantId} was already ${undo === "compensate" ? "compensated" : "aborted"}` };
    }
    if (original && !entry?.ops[original]) {
      // Null compensation: the action never ran here; record it so a late action is refused.
      await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "noop", at: Date.now() }]);
      return { outcome: "ok", result: null };
    }
    const o = await this.invoke(call);
    if (o.outcome === "ok") await this.wal.append([{ r: "b.op", key, op: call.op, outcome: "ok", result: o.result ?? null, at: Date.now() }]);
    return o;
  }

  private invoke(call: ParticipantCall): Promise<CallOutcome> {
    const service = call.endpoint.slice("service:".length);
    const conn = this.services.get(service);
    if (conn === undefined) return Promise.resolve({ outcome: "retry", error: `service ${service} is not connected to this sidecar (dtx.register("${service}", …))` });
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
        resolve({ outcome: "retry", error: `service ${service} disconnected` });
      }
    });
  }
}
