// Zod schemas for what the sidecar sends a client: the ok-body of every op's
// reply (`{ id, ok: true, ...body }`; `{ id, ok: false, error }` is WireError,
// errors.ts) and the callback frames it pushes to a service. Types at the
// edges come from here (z.infer). Unlike requests these are not strict: a
// newer sidecar may add fields, and the client passes them on.
import { z } from "zod";
import { type ClientOp, sidecarId, txnState } from "./messages.ts";

const protocol = z.enum(["2pc", "saga"]);
const empty = z.looseObject({});
const at = z.number().nullable();

const decided = <Outcome extends "committed" | "rolled_back">(outcome: Outcome) =>
  z.looseObject({
    name: z.string(),
    outcome: z.literal(outcome),
    protocol,
    /** Sidecars whose branches have not acknowledged yet: finished in the background. */
    pending: z.array(z.string()),
  });

/** A participant of an orchestrated transaction, as execute and abort answer. */
const orchestratedParticipant = z.looseObject({
  participantId: z.string(),
  /** The sidecar it lives on (service:<name>@<id>, store:<id>; a local service or store: this one); null for HTTP. */
  sidecar: z.string().nullable().optional(),
  /** Where it ended: prepared, committed, executed, compensated, not_reached, … */
  status: z.string(),
  result: z.unknown().optional(),
  error: z.string().nullable(),
  /** A stable code for why, when there is one: PARTICIPANT_UNAVAILABLE (its sidecar is not a peer, or its service is not registered there), PEER_UNREACHABLE. */
  code: z.string().nullable().optional(),
});

/** What execute, abort (and resolve of an orchestrated transaction) answer. */
const executeResult = z.looseObject({
  name: z.string(),
  outcome: txnState,
  /** null: never executed (aborted before execute). */
  protocol: protocol.nullable(),
  reason: z.string().nullable(),
  participants: z.array(orchestratedParticipant),
});

/** One finished operation on an orchestrated participant (status). */
const step = z.looseObject({ op: z.string(), outcome: z.string(), result: z.unknown().optional(), error: z.string().optional(), code: z.string().optional(), at: z.number() });

const statusView = z.looseObject({
  name: z.string(),
  state: txnState,
  /** null: an orchestrated transaction not executed yet. */
  protocol: protocol.nullable(),
  /** The sidecar that coordinates it; on a sidecar that only holds branches of it, participants are those branches. */
  coordinator: z.string(),
  participants: z.array(
    z.union([
      // A 2PC branch.
      z.looseObject({ branch: z.string(), sidecar: z.string(), vote: z.enum(["yes", "no", "readonly"]).nullable(), acked: z.boolean() }),
      // An orchestrated participant.
      orchestratedParticipant.extend({ endpoint: z.string(), steps: z.array(step) }),
    ]),
  ),
  timestamps: z.looseObject({ begun: at, prepared: at, decided: at, finished: at }),
  /** Why it rolled back or failed, when it did. */
  error: z.string().nullable(),
  /** "orchestrated" for createTransaction's face. */
  kind: z.literal("orchestrated").optional(),
});

/** A link to a peer sidecar (dtx peers, /v1/peers). */
const peer = z.looseObject({
  id: z.string(),
  /** The dialed url; null for a peer known only because it dialed us. */
  url: z.string().nullable(),
  state: z.enum(["up", "connecting", "down"]),
  /** When `state` last changed (ms since the epoch). */
  since: z.number(),
  dialed: z.string().nullable(),
  accepted: z.number(),
  lastError: z.string().nullable(),
  sent: z.number(),
  received: z.number(),
  dropped: z.number(),
  invalid: z.number(),
});

/** The ok-body of the reply to each op. */
export const replies = {
  hello: z.looseObject({ version: z.number().int(), sidecar: sidecarId, defaultTimeoutMs: z.number().int().positive() }),
  begin: z.looseObject({ name: z.string(), branch: z.string(), context: z.string(), protocol }),
  join: z.looseObject({ name: z.string(), branch: z.string(), coordinator: z.string() }),
  /** `value` only when found. */
  get: z.looseObject({ found: z.boolean(), value: z.unknown().optional() }),
  put: empty,
  delete: empty,
  prepare: z.looseObject({ name: z.string(), state: z.literal("prepared"), protocol }),
  end: empty,
  commit: decided("committed"),
  rollback: decided("rolled_back"),
  status: statusView,
  // Every listed transaction has its protocol: an orchestrated one is listed once executed.
  list: z.looseObject({ transactions: z.array(statusView.extend({ protocol })) }),
  sql_open: z.looseObject({ db: z.string(), gid: z.string(), kind: z.enum(["postgres", "mysql"]), url: z.string() }),
  sql_prepared: empty,
  o_create: z.looseObject({ name: z.string(), state: z.literal("active") }),
  o_add: z.looseObject({ name: z.string(), participants: z.number().int() }),
  o_execute: executeResult,
  o_abort: executeResult,
  /** The orchestrated transactions retried now. */
  recover: z.looseObject({ resumed: z.array(z.string()) }),
  peers: z.looseObject({ peers: z.array(peer) }),
  /** A 2PC transaction answers as commit or rollback does; an orchestrated one as execute. */
  resolve: z.union([decided("committed"), decided("rolled_back"), executeResult]),
  register: z.looseObject({ service: z.string() }),
  callback_result: empty,
} satisfies Record<ClientOp, z.ZodType>;

export type ReplyOf<Op extends ClientOp> = z.infer<(typeof replies)[Op]>;

/** A call the sidecar pushes to a registered service (dtx.register); the service answers with callback_result. */
export const callbackFrame = z.looseObject({
  op: z.literal("callback"),
  cb: z.number().int().nonnegative(),
  service: z.string(),
  /** prepare, commit, abort (TCC) or execute, compensate (Saga). */
  method: z.string(),
  name: z.string(),
  participantId: z.string(),
  idempotencyKey: z.string(),
  payload: z.unknown().optional(),
  context: z.unknown().optional(),
  action: z.string().nullable().optional(),
});
export type CallbackFrame = z.infer<typeof callbackFrame>;
