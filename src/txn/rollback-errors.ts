// What a client hears about a transaction that was rolled back: aborted (a no vote,
// a timeout, a client's rollback) or conflicted (serializable validation; retryable).
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";

export function abortedError(name: string, reason = "the transaction was rolled back", participant?: string): WireError {
  return wireError(ErrorCode.TRANSACTION_ABORTED, `transaction "${name}" was rolled back: ${reason}`, { participant, reason });
}

function conflictError(name: string, reason = "conflict", participant?: string): WireError {
  return wireError(ErrorCode.TRANSACTION_CONFLICT, `transaction "${name}" conflicted and was rolled back: ${reason}; retry it`, { participant, reason });
}

/** The error a transaction that rolled back answers with: a conflict, or an abort. */
export function rolledBackError(name: string, conflict: boolean | undefined, reason?: string, participant?: string): WireError {
  return conflict ? conflictError(name, reason, participant) : abortedError(name, reason, participant);
}
