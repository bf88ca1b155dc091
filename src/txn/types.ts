// Inputs and effects of the pure transaction engine (DESIGN §2).
import type { CallOutcome } from "../participants/outcome.ts";
import type { WireError } from "../protocol/errors.ts";
import type { ClientRequest, PeerMessage } from "../protocol/messages.ts";
import type { BarrierSummary, OrchestrationSummary, StepOp } from "../wal/orchestration-records.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord, Outcome, SqlResourceRef } from "../wal/records.ts";

/** Where a reply goes: a client connection and its request id. */
export interface ReplyTo {
  conn: number;
  id: number;
}

/** Requests the engine handles; hello, register, callback_result and peers stay in the sidecar's connection layer. */
export type ClientInput = Exclude<ClientRequest, { op: "hello" | "register" | "callback_result" | "peers" }>;

export type Input =
  | { k: "client"; from: ReplyTo; req: ClientInput; now: number }
  | { k: "peer"; msg: PeerMessage; now: number }
  | { k: "tick"; now: number }
  | { k: "disconnect"; conn: number; now: number }
  | { k: "recover"; coordinators: CoordinatorSummary[]; branches: BranchSummary[]; orchestrations?: OrchestrationSummary[]; hosted?: BarrierSummary[]; now: number }
  /** What a participant call (effect "call") came back with. */
  | ({ k: "call_result"; name: string; index: number; callId: number; now: number } & CallOutcome)
  /** A client connection serves calls for `service` (dtx.register), until it disconnects. */
  | { k: "register"; conn: number; service: string; now: number }
  /** What a registered service's handler (effect "invoke") answered. */
  | ({ k: "invoked"; id: number; now: number } & CallOutcome)
  /** Fed back by the runtime once a record of a hosted participant's barrier is durable (a store commit's locks go). */
  | { k: "hosted_durable"; key: string; now: number }
  /** A send marked ifLinked did not leave: the message was never delivered, and why. */
  | { k: "undeliverable"; to: string; msg: PeerMessage; code: string; reason: string; now: number }
  /** Fed back by the runtime once a branch's final record is durable. */
  | { k: "applied"; name: string; branch: string; now: number }
  /** The runtime finished a branch's SQL work in every database (ok), or could not yet (a resent decision retries). */
  | { k: "sql_finished"; name: string; branch: string; ok: boolean; now: number };

export type ReplyBody = { ok: true; [k: string]: unknown } | { ok: false; error: WireError };

export type Effect =
  /**
   * `lazy`: nothing this step sends or replies depends on the record (it serves status only): the step's
   * other effects do not wait for it, though it is logged in order with everything else.
   */
  | { k: "persist"; rec: LogRecord; lazy?: true }
  /** `ifLinked`: send now over a link that is up, or not at all (fed back as "undeliverable"): never queued, so never late. */
  | { k: "send"; to: string; msg: PeerMessage; ifLinked?: true }
  /**
   * `unlogged`: waits only for what earlier steps logged, not for this step's records (see maybeFinish in coordinator.ts).
   * `immediate`: depends on nothing any step logged, so it waits for nothing (see begin in coordinator.ts).
   */
  | { k: "reply"; to: ReplyTo; body: ReplyBody; unlogged?: true; immediate?: true }
  /** Feed this input back into the node once everything persisted so far is durable. */
  | { k: "after"; input: Input }
  /** Finish a branch's prepared SQL work in its databases (COMMIT/ROLLBACK PREPARED, XA COMMIT/ROLLBACK); "sql_finished" says how it went. */
  | { k: "finish_sql"; name: string; branch: string; resources: SqlResourceRef[]; outcome: Outcome }
  /** Call a participant of an orchestrated transaction; its result comes back as "call_result". */
  | { k: "call"; call: ParticipantCall }
  /** Call a registered service's handler (the barrier in front of it ran in the engine); its answer comes back as "invoked". */
  | { k: "invoke"; invoke: ServiceInvoke };

/** One operation of a hosted participant, pushed to the service registered on connection `conn`. */
export interface ServiceInvoke {
  id: number;
  conn: number;
  service: string;
  method: StepOp;
  name: string;
  participantId: string;
  idempotencyKey: string;
  payload?: unknown;
  context?: unknown;
  action?: string;
}

/** One operation on one HTTP participant (the seed's protocol). */
export interface ParticipantCall {
  name: string;
  index: number;
  participantId: string;
  endpoint: string;
  op: StepOp;
  callId: number;
  /** The same for every retry of this operation, so the participant can apply it once. */
  idempotencyKey: string;
  payload?: unknown;
  context?: unknown;
  action?: string;
  timeoutMs: number;
}

/**
 * The runtime's one rule: all persists of a step are made durable (together
 * with everything persisted earlier) before any send, reply or after of that
 * step is carried out. The exceptions are a reply marked `unlogged`, which
 * waits only for what earlier steps persisted, and one marked `immediate`,
 * which waits for nothing.
 */
export interface StepResult {
  effects: Effect[];
}
