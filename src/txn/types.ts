// Inputs and effects of the pure transaction engine (DESIGN §2).
import type { WireError } from "../protocol/errors.ts";
import type { ClientRequest, PeerMessage } from "../protocol/messages.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord } from "../wal/records.ts";

/** Where a reply goes: a client connection and its request id. */
export interface ReplyTo {
  conn: number;
  id: number;
}

export type ClientInput = Exclude<ClientRequest, { op: "hello" }>;

export type Input =
  | { k: "client"; from: ReplyTo; req: ClientInput; now: number }
  | { k: "peer"; msg: PeerMessage; now: number }
  | { k: "tick"; now: number }
  | { k: "disconnect"; conn: number; now: number }
  | { k: "recover"; coordinators: CoordinatorSummary[]; branches: BranchSummary[]; now: number }
  /** Fed back by the runtime once a branch's final record is durable. */
  | { k: "applied"; name: string; branch: string; now: number };

export type ReplyBody = { ok: true; [k: string]: unknown } | { ok: false; error: WireError };

export type Effect =
  | { k: "persist"; rec: LogRecord }
  | { k: "send"; to: string; msg: PeerMessage }
  | { k: "reply"; to: ReplyTo; body: ReplyBody }
  /** Feed this input back into the node once everything persisted so far is durable. */
  | { k: "after"; input: Input };

/**
 * The runtime's one rule: all persists of a step are made durable (together
 * with everything persisted earlier) before any send, reply or after of that
 * step is carried out.
 */
export interface StepResult {
  effects: Effect[];
}
