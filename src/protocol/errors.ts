// Stable error codes shared by the sidecar, its peers and the client, and the error body that carries them.
import { z } from "zod";

export const ErrorCode = {
  BAD_REQUEST: "BAD_REQUEST",
  FRAME_TOO_LARGE: "FRAME_TOO_LARGE",
  PROTOCOL_VERSION: "PROTOCOL_VERSION",
  NAME_IN_USE: "NAME_IN_USE",
  NOT_FOUND: "NOT_FOUND",
  INVALID_STATE: "INVALID_STATE",
  TRANSACTION_ABORTED: "TRANSACTION_ABORTED",
  TRANSACTION_CONFLICT: "TRANSACTION_CONFLICT",
  OUTCOME_UNKNOWN: "OUTCOME_UNKNOWN",
  PROTOCOL_UNSUPPORTED: "PROTOCOL_UNSUPPORTED",
  LIMIT_EXCEEDED: "LIMIT_EXCEEDED",
  TIMEOUT: "TIMEOUT",
  STORAGE_FULL: "STORAGE_FULL",
  NOT_READY: "NOT_READY",
  SHUTTING_DOWN: "SHUTTING_DOWN",
  PEER_UNREACHABLE: "PEER_UNREACHABLE",
  /** An orchestrated participant's sidecar is not a peer, or its service is not registered there: the call never ran. */
  PARTICIPANT_UNAVAILABLE: "PARTICIPANT_UNAVAILABLE",
  UNAUTHORIZED: "UNAUTHORIZED",
  INTERNAL: "INTERNAL",
  // SQL branches (DESIGN §5.3).
  SQL_DB_UNKNOWN: "SQL_DB_UNKNOWN",
  SQL_CONNECTION_FAILED: "SQL_CONNECTION_FAILED",
  SQL_PREPARED_DISABLED: "SQL_PREPARED_DISABLED",
  SQL_PREPARE_FAILED: "SQL_PREPARE_FAILED",
  SQL_GID_DUPLICATE: "SQL_GID_DUPLICATE",
  SQL_GID_UNKNOWN: "SQL_GID_UNKNOWN",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const retryableCodes: ReadonlySet<string> = new Set([
  ErrorCode.TRANSACTION_CONFLICT,
  ErrorCode.NOT_READY,
  ErrorCode.PEER_UNREACHABLE,
  ErrorCode.PARTICIPANT_UNAVAILABLE,
  ErrorCode.STORAGE_FULL,
  ErrorCode.TIMEOUT,
  ErrorCode.SQL_CONNECTION_FAILED,
]);

/**
 * The `error` of a `{ id, ok: false, error }` reply (and of a federation `decided` body). Not strict: a
 * newer sidecar may add fields; a reader keeps only these.
 */
export const wireErrorSchema = z.object({
  code: z.string(),
  message: z.string(),
  retryable: z.boolean(),
  /** The branch (participant) that caused an abort, when known. */
  participant: z.string().optional(),
  /** Why a transaction was aborted, when it was. */
  reason: z.string().optional(),
});
export type WireError = z.infer<typeof wireErrorSchema>;

export function wireError(code: ErrorCode, message: string, extra: Partial<WireError> = {}): WireError {
  const e: WireError = { code, message, retryable: retryableCodes.has(code) };
  // Absent fields are left out, not sent as undefined (MessagePack ext 0, which other decoders do not know).
  if (extra.participant !== undefined) e.participant = extra.participant;
  if (extra.reason !== undefined) e.reason = extra.reason;
  return e;
}

/** An error raised inside the sidecar that maps one-to-one to a wire error. */
export class DtxError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: Partial<WireError> = {},
  ) {
    super(message);
  }
  toWire(): WireError {
    return wireError(this.code, this.message, this.extra);
  }
}
