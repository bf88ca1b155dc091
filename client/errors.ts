// Errors a dtx client call can reject with. Each has a stable `code` and says whether a retry can help.
import { wireErrorSchema } from "../src/protocol/errors.ts";
import { describeZodError } from "../src/protocol/messages.ts";

export class DtxClientError extends Error {
  override readonly name: string = "DtxClientError";
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A participant voted no or the transaction was rolled back; `reason` says why. */
export class TransactionAbortedError extends DtxClientError {
  override readonly name = "TransactionAbortedError";
  readonly reason: string;
  constructor(
    message: string,
    readonly participant?: string,
    reason?: string,
  ) {
    super("TRANSACTION_ABORTED", message, false);
    this.reason = reason ?? message;
  }
}

/** Another transaction touched the same keys first; running the whole transaction again can succeed. */
export class TransactionConflictError extends DtxClientError {
  override readonly name = "TransactionConflictError";
  readonly reason: string;
  constructor(
    message: string,
    readonly participant?: string,
  ) {
    super("TRANSACTION_CONFLICT", message, true);
    this.reason = message;
  }
}

/** The reply to a commit, rollback or prepare never arrived; read the outcome later with `status(name)`. */
export class OutcomeUnknownError extends DtxClientError {
  override readonly name = "OutcomeUnknownError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("OUTCOME_UNKNOWN", message, false, options);
  }
}

export class NameInUseError extends DtxClientError {
  override readonly name = "NameInUseError";
  constructor(message: string) {
    super("NAME_IN_USE", message, false);
  }
}

export class NotFoundError extends DtxClientError {
  override readonly name = "NotFoundError";
  constructor(message: string) {
    super("NOT_FOUND", message, false);
  }
}

/**
 * A database branch of tx.sql(db) could not be opened or prepared. `code` is one of SQL_DB_UNKNOWN,
 * SQL_CONNECTION_FAILED (retryable), SQL_PREPARED_DISABLED, SQL_PREPARE_FAILED, SQL_GID_DUPLICATE,
 * SQL_GID_UNKNOWN; `db` names the database (when known) and `cause` holds the database's own error.
 */
export class SqlError extends DtxClientError {
  override readonly name = "SqlError";
  constructor(
    code: string,
    message: string,
    readonly db?: string,
    retryable = false,
    options?: { cause?: unknown },
  ) {
    super(code, message, retryable, options);
  }
}

/**
 * Every other failure, keeping the sidecar's code (BAD_REQUEST, PROTOCOL_VERSION, INVALID_STATE, TIMEOUT, ...)
 * or one of the client's own: CONNECTION_LOST, CONNECTION_FAILED, CLIENT_CLOSED, BAD_REPLY.
 */
export class ProtocolError extends DtxClientError {
  override readonly name = "ProtocolError";
}

/** Turn the `error` of a `{ ok: false }` reply into the matching class. */
export function errorFromWire(error: unknown): DtxClientError {
  const read = wireErrorSchema.safeParse(error);
  if (!read.success) return new ProtocolError("BAD_REPLY", `sidecar sent an unreadable error (${describeZodError(read.error)}): ${JSON.stringify(error)}`);
  const { code, message, retryable, participant, reason } = read.data;
  switch (code) {
    case "TRANSACTION_ABORTED":
      return new TransactionAbortedError(message, participant, reason);
    case "TRANSACTION_CONFLICT":
      return new TransactionConflictError(message, participant);
    case "OUTCOME_UNKNOWN":
      return new OutcomeUnknownError(message);
    case "NAME_IN_USE":
      return new NameInUseError(message);
    case "NOT_FOUND":
      return new NotFoundError(message);
    default:
      if (code.startsWith("SQL_")) return new SqlError(code, message, undefined, retryable);
      return new ProtocolError(code, message, retryable);
  }
}
