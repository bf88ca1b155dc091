// Zod schemas for every message on the client socket and between sidecars.
// Types at the edges come from here (z.infer), so wire and types cannot drift.
import { z } from "zod";
import { limits } from "../limits.ts";
import { sqlDbNamePattern } from "./sql-branch.ts";
import { hostedEndpointPattern, participantId, participantSpec, sidecarIdChars } from "./orchestration.ts";
import { callLabel, keyProblem } from "./value.ts";

export const txnName = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,64}$/, "name must match ^[A-Za-z0-9_.:-]{1,64}$");
export const sidecarId = z.string().regex(new RegExp(`^${sidecarIdChars}$`), `sidecar id must match ^${sidecarIdChars}$`);
export const branchId = z.string().min(1).max(96);
/** A store key: the rule is value.ts's keyProblem, the one the client applies. */
export const key = z.string().superRefine((k, ctx) => {
  const bad = keyProblem(k);
  if (bad) ctx.addIssue({ code: "custom", message: bad });
});
// Ids start at 1: id 0 is what a connection-level error (FRAME_TOO_LARGE, an unreadable frame) is answered with.
const reqId = z.number().int().positive();
export const sqlDbName = z.string().regex(sqlDbNamePattern, "db must match ^[A-Za-z0-9_.-]{1,32}$ (a --db name configured on the sidecar)");

export const protocolChoice = z.enum(["auto", "2pc", "saga"]);
export const consistency = z.enum(["eventual", "strong", "immediate"]);
export const availability = z.enum(["high", "medium", "low"]);
/** A registered service's name (dtx.register), as `service:<name>` endpoints say it. */
export const serviceName = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "service must match ^[A-Za-z0-9_.-]{1,64}$");
const durationMs = z.number().int().positive().max(7 * 24 * 3600 * 1000);

export const txnState = z.enum([
  "active",
  "preparing",
  "prepared",
  "committing",
  "committed",
  "rolling_back",
  "rolled_back",
  "compensating",
  "compensated",
  "failed",
]);
export type TxnState = z.infer<typeof txnState>;

/** Writes the client buffered during a callback, sent with prepare/end: [key, value, deleted]. */
// No count here: frameBytesMax bounds it, and the engine refuses more than opsPerBranchMax with LIMIT_EXCEEDED, as the README says.
const branchWrites = z.array(z.tuple([key, z.unknown(), z.boolean()]));

/**
 * What begin takes besides the name. `branch` (on begin and prepare) is an id the client chose for
 * begin's branch: with it the client knows the branch and its context token before begin is answered.
 */
const contextTokenText = z.string().min(1).max(2048);

const beginOptions = {
  protocol: protocolChoice.optional(),
  consistency: consistency.optional(),
  availability: availability.optional(),
  timeoutMs: durationMs.optional(),
  preparedTimeoutMs: durationMs.optional(),
  traceparent: z.string().max(128).optional(),
};
/** What beginDistributed takes as its options; the client checks them before anything is sent. */
export const beginOptionsSchema = z.strictObject(beginOptions);

/** The seed's (Kailash SDK's) requirements: `timeout` in seconds. */
export const requirementsSchema = z.strictObject({
  consistency: consistency.optional(),
  availability: availability.optional(),
  timeout: z.number().positive().max(7 * 24 * 3600).optional(),
});

/** What createTransaction takes besides the name: the seed's `requirements`, or the same flat (timeoutMs in ms), not both. */
const createOptions = {
  protocol: protocolChoice.optional(),
  requirements: requirementsSchema.optional(),
  consistency: consistency.optional(),
  availability: availability.optional(),
  timeoutMs: durationMs.optional(),
  context: z.unknown().optional(),
};
const flatRequirements = ["consistency", "availability", "timeoutMs"] as const;
function oneRequirementsShape(o: { requirements?: unknown; consistency?: unknown; availability?: unknown; timeoutMs?: unknown }, ctx: z.RefinementCtx) {
  if (o.requirements === undefined) return;
  const flat = flatRequirements.filter((k) => o[k] !== undefined);
  if (flat.length) ctx.addIssue({ code: "custom", path: [flat[0]], message: `give requirements or the flat ${flatRequirements.join("/")}, not both` });
}
export const createOptionsSchema = z.strictObject(createOptions).superRefine(oneRequirementsShape);

const listOptions = { state: txnState.optional(), limit: z.number().int().positive().max(10_000).optional() };
export const listOptionsSchema = z.strictObject(listOptions);

export const clientRequest = z.discriminatedUnion("op", [
  z.strictObject({ id: reqId, op: z.literal("hello"), version: z.number().int(), client: z.string().max(200).optional() }),
  z.strictObject({ id: reqId, op: z.literal("begin"), name: txnName, branch: branchId.optional(), ...beginOptions }),
  z.strictObject({ id: reqId, op: z.literal("join"), token: contextTokenText, branch: branchId.optional() }),
  z.strictObject({ id: reqId, op: z.literal("get"), key, name: txnName.optional(), branch: branchId.optional() }),
  z.strictObject({ id: reqId, op: z.literal("put"), name: txnName, branch: branchId, key, value: z.unknown() }),
  z.strictObject({ id: reqId, op: z.literal("delete"), name: txnName, branch: branchId, key }),
  // `branch`: begin's branch, so a prepare never reaches another transaction of the same name.
  // `begin`: the callback never needed the sidecar, so it was not begun yet: begin and prepare in one request.
  z.strictObject({
    id: reqId,
    op: z.literal("prepare"),
    name: txnName,
    branch: branchId.optional(),
    writes: branchWrites.optional(),
    begin: z.strictObject({ ...beginOptions, elapsedMs: z.number().int().nonnegative().max(7 * 24 * 3600 * 1000) }).optional(),
  }),
  z.strictObject({
    id: reqId,
    op: z.literal("end"),
    name: txnName,
    branch: branchId,
    ok: z.boolean(),
    reason: z.string().max(1000).optional(),
    writes: branchWrites.optional(),
    // The callback never needed the sidecar, so it did not join yet: join with this token, then end.
    join: contextTokenText.optional(),
  }),
  z.strictObject({ id: reqId, op: z.literal("commit"), name: txnName }),
  z.strictObject({ id: reqId, op: z.literal("rollback"), name: txnName, branch: branchId.optional(), reason: z.string().max(1000).optional() }),
  z.strictObject({ id: reqId, op: z.literal("status"), name: txnName }),
  // SQL branches: register a database for this branch (logged before the reply), then report it prepared.
  z.strictObject({ id: reqId, op: z.literal("sql_open"), name: txnName, branch: branchId, db: sqlDbName }),
  z.strictObject({ id: reqId, op: z.literal("sql_prepared"), name: txnName, branch: branchId, db: sqlDbName, gid: z.string().min(1).max(200) }),
  // The orchestrated face (createTransaction → addParticipant → execute).
  z.strictObject({ id: reqId, op: z.literal("o_create"), name: txnName, ...createOptions }).superRefine(oneRequirementsShape),
  z.strictObject({ id: reqId, op: z.literal("o_add"), name: txnName, participant: participantSpec }),
  z.strictObject({ id: reqId, op: z.literal("o_execute"), name: txnName }),
  z.strictObject({ id: reqId, op: z.literal("o_abort"), name: txnName, reason: z.string().max(1000).optional() }),
  z.strictObject({ id: reqId, op: z.literal("recover") }),
  z.strictObject({ id: reqId, op: z.literal("peers") }),
  z.strictObject({ id: reqId, op: z.literal("resolve"), name: txnName, outcome: z.enum(["commit", "rollback"]) }),
  // Service callbacks: this connection serves a participant; the sidecar calls it with {cb, ...} frames.
  z.strictObject({ id: reqId, op: z.literal("register"), service: serviceName }),
  z.strictObject({
    id: reqId,
    op: z.literal("callback_result"),
    cb: z.number().int().nonnegative(),
    ok: z.boolean(),
    result: z.unknown().optional(),
    error: z.string().max(2000).optional(),
    /** false: the call failed for good (e.g. a business refusal); otherwise it is retried. */
    retryable: z.boolean().optional(),
  }),
  z.strictObject({ id: reqId, op: z.literal("list"), ...listOptions }),
]);
export type ClientRequest = z.infer<typeof clientRequest>;

// One schema per op, so a request is checked against its own shape only (the
// union would try the discriminator first anyway; this skips its overhead on
// the hot path). The union stays the single definition.
const byOp = new Map<string, z.ZodType>(clientRequest.options.map((o) => [(o.shape.op as z.ZodLiteral<string>).value, o]));
const unknownOp = z.object({ op: z.enum([...byOp.keys()] as [string, ...string[]]) });

export function parseClientRequest(body: unknown): { success: true; data: ClientRequest } | { success: false; error: z.ZodError } {
  const op = (body as { op?: unknown } | null)?.op;
  const schema = typeof op === "string" ? byOp.get(op) : undefined;
  if (!schema) return unknownOp.safeParse(body) as { success: false; error: z.ZodError };
  return schema.safeParse(body) as { success: true; data: ClientRequest } | { success: false; error: z.ZodError };
}
export type ClientOp = ClientRequest["op"];

/** The op a request carries besides its own: a prepare that begins its transaction, an end that joins its branch. */
export function carriedOp(req: ClientRequest): "begin" | "join" | undefined {
  if (req.op === "prepare" && req.begin) return "begin";
  if (req.op === "end" && req.join !== undefined) return "join";
  return undefined;
}

/** Messages between sidecars (federation) and from a sidecar to itself. */
/** W3C trace context (https://www.w3.org/TR/trace-context/), carried on every message about a traced transaction. */
const traceparent = z.string().max(128).optional();

const stepOp = z.enum(["prepare", "commit", "abort", "execute", "compensate"]);
/**
 * Which participant of which orchestrated transaction a hosted-step message is about. `incarnation`: the
 * orchestrator's id for this execution of the name (absent only in logs from before it was recorded).
 */
const hostedStep = {
  traceparent,
  name: txnName,
  from: sidecarId,
  incarnation: branchId.optional(),
  participantId,
  index: z.number().int().nonnegative().max(limits.branchesPerTxnMax),
};

export const peerMessage = z.discriminatedUnion("t", [
  z.strictObject({ t: z.literal("enlist"), traceparent, incarnation: branchId.optional(), name: txnName, branch: branchId, from: sidecarId }),
  z.strictObject({ t: z.literal("enlisted"), traceparent, name: txnName, branch: branchId, from: sidecarId }),
  // unknown: the coordinator holds no transaction of that name (yet: its begin may still be on the way).
  // `code`: what the joiner's client is told (a transaction rolled back or unknown there is TRANSACTION_ABORTED).
  z.strictObject({
    t: z.literal("enlist_refused"),
    traceparent,
    name: txnName,
    branch: branchId,
    from: sidecarId,
    reason: z.string().max(1000),
    unknown: z.boolean().optional(),
    code: z.enum(["INVALID_STATE", "TRANSACTION_ABORTED", "LIMIT_EXCEEDED"]).optional(),
  }),
  z.strictObject({ t: z.literal("prepare"), traceparent, name: txnName, branch: branchId, from: sidecarId }),
  z.strictObject({
    t: z.literal("vote"),
    traceparent,
    name: txnName,
    branch: branchId,
    from: sidecarId,
    vote: z.enum(["yes", "no", "readonly"]),
    reason: z.string().max(1000).optional(),
    conflict: z.boolean().optional(),
  }),
  z.strictObject({ t: z.literal("decision"), traceparent, name: txnName, branch: branchId, from: sidecarId, outcome: z.enum(["commit", "rollback"]) }),
  z.strictObject({ t: z.literal("ack"), traceparent, name: txnName, branch: branchId, from: sidecarId }),
  z.strictObject({ t: z.literal("query"), traceparent, name: txnName, branch: branchId, from: sidecarId }),
  // A client of another sidecar decides a transaction this sidecar coordinates (DESIGN §4: any client may decide).
  z.strictObject({ t: z.literal("decide"), traceparent, name: txnName, outcome: z.enum(["commit", "rollback"]), req: z.string().max(128), from: sidecarId }),
  z.strictObject({ t: z.literal("decided"), traceparent, name: txnName, req: z.string().max(128), from: sidecarId, body: z.record(z.string(), z.unknown()) }),
  // Orchestrated transactions across sidecars: the orchestrator asks the participant's sidecar to run one operation
  // (o_call); that sidecar logs it behind its barrier, runs it, and answers once its records are durable (o_result).
  z.strictObject({
    t: z.literal("o_call"),
    ...hostedStep,
    /** The orchestrator's process and its call: an answer counts only for the call it names. */
    boot: branchId,
    callId: z.number().int().nonnegative(),
    endpoint: z.string().regex(hostedEndpointPattern, "endpoint must be service:<name> or store:"),
    op: stepOp,
    idempotencyKey: z.string().max(256),
    payload: z.unknown().optional(),
    context: z.unknown().optional(),
    action: z.string().max(200).optional(),
  }),
  z.strictObject({
    t: z.literal("o_result"),
    ...hostedStep,
    boot: branchId,
    callId: z.number().int().nonnegative(),
    op: stepOp,
    outcome: z.enum(["ok", "fail", "retry"]),
    result: z.unknown().optional(),
    error: z.string().max(2000).optional(),
    code: z.string().max(64).optional(),
    /** false: the operation provably never reached the participant (its service is not registered there). */
    reached: z.literal(false).optional(),
  }),
  // A participant's sidecar holding a prepare with no decision asks its orchestrator (never decides alone).
  z.strictObject({ t: z.literal("o_query"), ...hostedStep }),
  // The orchestrator's decision for one participant (presumed abort: no record of it is rollback), with what its operation is called with.
  z.strictObject({
    t: z.literal("o_decision"),
    ...hostedStep,
    outcome: z.enum(["commit", "rollback"]),
    payload: z.unknown().optional(),
    context: z.unknown().optional(),
    action: z.string().max(200).optional(),
  }),
]);
export type PeerMessage = z.infer<typeof peerMessage>;

/**
 * Name the first failing field of a zod error, for BAD_REQUEST messages. An unknown field comes first: it
 * usually explains the rest (a misspelt option), and a field nobody reads must never pass silently.
 */
export function describeZodError(error: z.ZodError): string {
  const issue = error.issues.find((i) => i.code === "unrecognized_keys") ?? error.issues[0];
  if (!issue) return "invalid message";
  const at = issue.path.join(".");
  if (issue.code === "unrecognized_keys") {
    const fields = issue.keys.map((k) => (at ? `${at}.${k}` : k)).join(", ");
    return `${fields}: unknown field${issue.keys.length > 1 ? "s" : ""}; nothing reads ${issue.keys.length > 1 ? "them" : "it"}, so it is refused rather than ignored (check the spelling)`;
  }
  return `${at || "message"}: ${issue.message}`;
}

/**
 * A bad key of get/put/delete or of a write in prepare/end, in the user's terms (`tx.put("k"): the key …`)
 * rather than zod's path (writes.0.0); undefined for any other issue, and when a field is unknown (that
 * comes first, as describeZodError says).
 */
export function describeKeyIssue(body: unknown, error: z.ZodError): string | undefined {
  if (error.issues.some((i) => i.code === "unrecognized_keys")) return undefined;
  const [first, index, field] = error.issues[0]?.path ?? [];
  const b = body as { op?: unknown; name?: unknown; key?: unknown; writes?: unknown };
  let call: string;
  let k: unknown;
  if (first === "key" && (b.op === "put" || b.op === "delete" || b.op === "get")) {
    call = b.op === "get" && b.name === undefined ? "dtx.get" : `tx.${b.op}`;
    k = b.key;
  } else if (first === "writes" && typeof index === "number" && field === 0 && Array.isArray(b.writes) && Array.isArray(b.writes[index])) {
    const w = b.writes[index] as unknown[];
    call = w[2] === true ? "tx.delete" : "tx.put";
    k = w[0];
  } else return undefined;
  return `${callLabel(call, k)}: ${keyProblem(k) ?? error.issues[0].message}`;
}
