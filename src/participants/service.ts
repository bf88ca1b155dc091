// Service-callback participants (dtx.register): the I/O of an operation the
// engine decided to call (effect "invoke"). The barrier in front of it, the
// records and the lane run in the engine (src/txn/hosted.ts), so this file only
// pushes the callback frame to the service's connection and hands back what it
// answered, or that it hung up. No timeout: the run lasts as long as the
// handler; whoever called waits only as long as its own call timeout.
import type { ServiceInvoke } from "../txn/types.ts";
import type { CallOutcome } from "./outcome.ts";

export interface CallbackTarget {
  /** Send a callback frame to a client connection; false if it is gone. */
  push(conn: number, frame: Record<string, unknown>): boolean;
}

export class ServiceCalls {
  private calls = new Map<number, { conn: number; resolve: (o: CallOutcome) => void }>();
  private nextCb = 1;

  constructor(private readonly target: CallbackTarget) {}

  /** The connection went: its calls in flight may have run, and are retried. */
  disconnected(conn: number): void {
    for (const [cb, call] of this.calls) {
      if (call.conn !== conn) continue;
      this.calls.delete(cb);
      call.resolve({ outcome: "retry", error: "the service disconnected before it answered" });
    }
  }

  /** Connection `conn` answered callback `cb`: only the connection it was sent to may settle it. */
  answer(conn: number, cb: number, a: { ok: boolean; result?: unknown; error?: string; retryable?: boolean }): void {
    const call = this.calls.get(cb);
    if (!call || call.conn !== conn) return; // a duplicate, or another connection's (a stale answer after a restart, say)
    this.calls.delete(cb);
    call.resolve(a.ok ? { outcome: "ok", result: a.result } : { outcome: a.retryable === false ? "fail" : "retry", error: a.error });
  }

  invoke(inv: ServiceInvoke): Promise<CallOutcome> {
    const cb = this.nextCb++;
    return new Promise<CallOutcome>((resolve) => {
      this.calls.set(cb, { conn: inv.conn, resolve });
      const pushed = this.target.push(inv.conn, {
        op: "callback",
        cb,
        service: inv.service,
        method: inv.method,
        name: inv.name,
        participantId: inv.participantId,
        idempotencyKey: inv.idempotencyKey,
        payload: inv.payload ?? null,
        context: inv.context ?? null,
        action: inv.action ?? null,
      });
      if (!pushed) {
        this.calls.delete(cb);
        resolve({ outcome: "retry", reached: false, error: `service ${inv.service} disconnected before the call was sent` });
      }
    });
  }
}
