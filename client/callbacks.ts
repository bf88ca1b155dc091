// Services as participants (dtx.register): the handlers this client serves, and its answers to the
// callback frames the sidecar pushes. A connection serves them from its hello on, so after a redial
// every service is registered again; a client that serves any redials as soon as it loses its socket.
import { describeZodError } from "../src/protocol/messages.ts";
import { type CallbackFrame, callbackFrame } from "../src/protocol/replies.ts";
import { reasonOf, unknownKeys } from "./checks.ts";
import type { Args, Conn } from "./connection.ts";

/** What a service callback receives: the transaction, the participant, and what to do. */
export type CallbackCall = Pick<CallbackFrame, "name" | "participantId" | "idempotencyKey" | "payload" | "context" | "action">;

/**
 * Handlers of a participant that is a service: TCC (prepare/commit/abort) and/or
 * Saga (action/compensate). A prepare that returns false or throws votes abort;
 * an action that throws fails the step (retried only if the error has retryable: true);
 * commit, abort and compensate are retried until they succeed or their budget runs out.
 */
export interface ServiceHandlers {
  prepare?(call: CallbackCall): unknown;
  commit?(call: CallbackCall): unknown;
  abort?(call: CallbackCall): unknown;
  action?(call: CallbackCall): unknown;
  compensate?(call: CallbackCall): unknown;
}

const methods: Record<string, keyof ServiceHandlers> = { prepare: "prepare", commit: "commit", abort: "abort", execute: "action", compensate: "compensate" };

export class Services {
  private readonly handlers = new Map<string, ServiceHandlers>();

  /** Serve `service` from now on; the caller tells the sidecar (register). */
  add(service: string, handlers: ServiceHandlers): void {
    unknownKeys(handlers, Object.values(methods), `register("${service}") handlers`);
    this.handlers.set(service, handlers);
  }

  /** True once a service is added: the connection then redials by itself (connection.ts). */
  get serving(): boolean {
    return this.handlers.size > 0;
  }

  /** Serve again on a new connection. */
  async registerAll(c: Conn): Promise<void> {
    for (const service of this.handlers.keys()) await c.send("register", { service });
  }

  /** Run the handler a callback frame names and answer with its result; a lost answer the sidecar retries. */
  async serve(c: Conn, frame: Record<string, unknown>): Promise<void> {
    await c.request("callback_result", await this.answer(frame)).catch(() => {});
  }

  private async answer(frame: Record<string, unknown>): Promise<Args<"callback_result">> {
    const read = callbackFrame.safeParse(frame);
    const cb = frame.cb as number;
    if (!read.success) return { cb, ok: false, error: `the client could not read the call: ${describeZodError(read.error)}`, retryable: false };
    const f = read.data;
    const method = methods[f.method];
    const handler = method ? this.handlers.get(f.service)?.[method] : undefined;
    if (!handler) return { cb, ok: false, error: `service ${f.service} has no ${method ?? f.method} handler`, retryable: method !== "action" && method !== "prepare" };
    try {
      const result = await handler({ name: f.name, participantId: f.participantId, idempotencyKey: f.idempotencyKey, payload: f.payload, context: f.context, action: f.action });
      return method === "prepare" && result === false ? { cb, ok: false, error: "voted abort", retryable: false } : { cb, ok: true, result: result ?? null };
    } catch (err) {
      const retryable = (err as { retryable?: unknown })?.retryable === true || (method !== "action" && method !== "prepare");
      return { cb, ok: false, error: reasonOf(err), retryable };
    }
  }
}
