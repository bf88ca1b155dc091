import { describe, expect, test } from "bun:test";
import {
  DtxClientError,
  errorFromWire,
  NameInUseError,
  NotFoundError,
  OutcomeUnknownError,
  ProtocolError,
  TransactionAbortedError,
  TransactionConflictError,
} from "../../client/errors.ts";
import { ErrorCode, wireError } from "../../src/protocol/errors.ts";

describe("errorFromWire", () => {
  test("TRANSACTION_ABORTED becomes TransactionAbortedError with participant and reason", () => {
    const e = errorFromWire(wireError(ErrorCode.TRANSACTION_ABORTED, "payments voted no: card declined", { participant: "B/payments" }));
    expect(e).toBeInstanceOf(TransactionAbortedError);
    expect(e).toBeInstanceOf(DtxClientError);
    expect(e).toBeInstanceOf(Error);
    const aborted = e as TransactionAbortedError;
    expect(aborted.code).toBe("TRANSACTION_ABORTED");
    expect(aborted.participant).toBe("B/payments");
    expect(aborted.reason).toBe("payments voted no: card declined");
    expect(aborted.retryable).toBe(false);
    expect(aborted.name).toBe("TransactionAbortedError");
    // With the sidecar's own reason, that is what `reason` holds (the message adds the transaction's name).
    const withReason = errorFromWire(wireError(ErrorCode.TRANSACTION_ABORTED, 'transaction "t" was rolled back: card declined', { reason: "card declined" })) as TransactionAbortedError;
    expect(withReason.reason).toBe("card declined");
  });

  test("TRANSACTION_CONFLICT becomes a retryable TransactionConflictError", () => {
    const e = errorFromWire({ code: "TRANSACTION_CONFLICT", message: "stock/A changed", retryable: false, participant: "A/store" });
    expect(e).toBeInstanceOf(TransactionConflictError);
    expect(e.code).toBe("TRANSACTION_CONFLICT");
    expect(e.retryable).toBe(true);
    expect((e as TransactionConflictError).participant).toBe("A/store");
  });

  test.each([
    [ErrorCode.OUTCOME_UNKNOWN, OutcomeUnknownError],
    [ErrorCode.NAME_IN_USE, NameInUseError],
    [ErrorCode.NOT_FOUND, NotFoundError],
  ] as const)("%s maps to its own class", (code, cls) => {
    const e = errorFromWire(wireError(code, "m"));
    expect(e).toBeInstanceOf(cls);
    expect(e.code).toBe(code);
    expect(e.message).toBe("m");
  });

  test.each([
    ErrorCode.BAD_REQUEST,
    ErrorCode.PROTOCOL_VERSION,
    ErrorCode.FRAME_TOO_LARGE,
    ErrorCode.INVALID_STATE,
    ErrorCode.TIMEOUT,
    ErrorCode.NOT_READY,
    "SOMETHING_NEW",
  ])("%s becomes a ProtocolError keeping the code and retryable flag", (code) => {
    const wire = { code, message: `boom ${code}`, retryable: code === "TIMEOUT" || code === "NOT_READY" };
    const e = errorFromWire(wire);
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e.code).toBe(code);
    expect(e.message).toBe(wire.message);
    expect(e.retryable).toBe(wire.retryable);
  });

  test("an unreadable error becomes ProtocolError BAD_REPLY", () => {
    for (const bad of [undefined, null, "oops", { message: "no code" }]) {
      const e = errorFromWire(bad);
      expect(e).toBeInstanceOf(ProtocolError);
      expect(e.code).toBe("BAD_REPLY");
    }
  });

  test("an error missing a field of the error body is BAD_REPLY naming that field", () => {
    const e = errorFromWire({ code: "NOT_FOUND", message: "no transaction x" });
    expect(e).toBeInstanceOf(ProtocolError);
    expect(e.code).toBe("BAD_REPLY");
    expect(e.message).toContain("retryable");
  });
});
