// Service-callback participants (dtx.register) behind the sub-transaction
// barrier. What the barrier decides (answer a recorded result, refuse, record a
// null compensation, go ahead with a sent mark; which operation runs next) is
// barrier.ts; this file does its I/O: it reads the key's entry from the log,
// appends the records the barrier names and waits until they are durable,
// pushes the callback frame to the service, times calls out and joins a retry
// to the run still in flight.
import type { Wal } from "../wal/wal.ts";
import type { BarrierOp, StepOp } from "../wal/orchestration-records.ts";
import type { ParticipantCall } from "../txn/types.ts";
import { type BarrierLane, arrive, barrierKeyOf, barrierRecord, decide, leave, resultRecord } from "./barrier.ts";
import type { CallOutcome } from "./outcome.ts";

export interface CallbackTarget {
  /** Send a callback frame to a client connection; false if it is gone. */
  push(conn: number, frame: Record<string, unknown>): boolean;
}

export class ServiceParticipants {
  private services = new Map<string, number>();
  private calls = new Map<number, { conn: number; resolve: (o: CallOutcome) => void }>();
  /** Per (transaction, participant): its operations that arrived and have not finished (barrier.ts). */
  private lanes = new Map<string, BarrierLane>();
  /** Per (transaction, participant, operation) in a lane: its run, and how to start it when its turn comes. */
  private runs = new Map<string, { done: Promise<CallOutcome>; start: () => void }>();
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
   * A retry of a call whose handler is still running (or waiting its turn) joins that run instead of starting
   * another: the run lasts as long as the handler, not as long as the caller is willing to wait (call.timeoutMs).
   */
  call(call: ParticipantCall): Promise<CallOutcome> {
    const running = this.enter(call);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<CallOutcome>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: "retry", error: `${call.endpoint} did not answer ${call.op} within ${call.timeoutMs} ms` }), call.timeoutMs);
    });
    return Promise.race([running, timeout]).finally(() => clearTimeout(timer));
  }

  /** Put the call in its key's lane (or join the same operation's run there); resolves with the run's outcome. */
  private enter(call: ParticipantCall): Promise<CallOutcome> {
    const key = barrierKeyOf(call.name, call.participantId);
    const runKey = `${key}/${call.op}`;
    const arrived = arrive(this.lanes.get(key) ?? [], call.op);
    if (arrived.join) return this.runs.get(runKey)!.done;
    this.lanes.set(key, arrived.lane);
    let start!: () => void;
    const done = new Promise<CallOutcome>((resolve, reject) => {
      start = () => void this.throughBarrier(key, call).then(resolve, reject).finally(() => this.finished(key, call.op));
    });
    this.runs.set(runKey, { done, start });
    if (arrived.start) start();
    return done;
  }

  /** A run finished: it leaves the lane, and the operation whose turn it now is starts. */
  private finished(key: string, op: StepOp): void {
    this.runs.delete(`${key}/${op}`);
    const left = leave(this.lanes.get(key) ?? [], op);
    if (left.lane.length) this.lanes.set(key, left.lane);
    else this.lanes.delete(key);
    if (left.start) this.runs.get(`${key}/${left.start}`)?.start();
  }

  private async throughBarrier(key: string, call: ParticipantCall): Promise<CallOutcome> {
    const d = decide(this.wal.barrierEntry(key), call);
    if (d.k === "answer") {
      if (d.record) await this.record(key, call.op, d.record);
      return d.answer;
    }
    const o = await this.invoke(key, call, d.record);
    const result = resultRecord(call.op, o);
    if (result) await this.record(key, call.op, result);
    return o;
  }

  private record(key: string, op: StepOp, b: BarrierOp): Promise<void> {
    return this.wal.append([barrierRecord(key, op, b, Date.now())]);
  }

  /** Push the call to its service. The sent mark (an action's or prepare's) is durable first: from then on it may have run. */
  private async invoke(key: string, call: ParticipantCall, sent: BarrierOp | undefined): Promise<CallOutcome> {
    const service = call.endpoint.slice("service:".length);
    const notConnected = (): CallOutcome => ({ outcome: "retry", reached: false, error: `service ${service} is not connected to this sidecar (dtx.register("${service}", …))` });
    if (!this.services.has(service)) return notConnected();
    if (sent) await this.record(key, call.op, sent);
    const conn = this.services.get(service);
    if (conn === undefined) return notConnected();
    const cb = this.nextCb++;
    return new Promise<CallOutcome>((resolve) => {
      this.calls.set(cb, { conn, resolve });
      const pushed = this.target.push(conn, {
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
      if (!pushed) {
        this.calls.delete(cb);
        resolve({ outcome: "retry", reached: false, error: `service ${service} disconnected before the call was sent` });
      }
    });
  }
}
