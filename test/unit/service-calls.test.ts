// The I/O half of service participants: a callback is settled only by the connection it was sent to.
import { expect, test } from "bun:test";
import { ServiceCalls } from "../../src/participants/service.ts";
import { ErrorCode, wireError } from "../../src/protocol/errors.ts";
import { decodeBody, encodeBody } from "../../src/protocol/frame.ts";

const invoke = { conn: 1, service: "payments", method: "execute", name: "t1", participantId: "pay", idempotencyKey: "t1/pay/execute" };

test("a callback_result from another connection does not settle the call; its own connection's does", async () => {
  const pushed: Record<string, unknown>[] = [];
  const calls = new ServiceCalls({ push: (_conn, frame) => (pushed.push(frame), true) });
  let settled: unknown;
  const running = calls.invoke(invoke as never).then((o) => (settled = o));
  const cb = pushed[0].cb as number;
  calls.answer(2, cb, { ok: true, result: "forged" });
  await Promise.resolve();
  expect(settled).toBeUndefined();
  calls.answer(1, cb, { ok: true, result: "charged" });
  await running;
  expect(settled).toEqual({ outcome: "ok", result: "charged" });
});

test("an error body leaves out fields it does not have (no MessagePack ext 0 for undefined)", () => {
  const e = wireError(ErrorCode.TRANSACTION_ABORTED, "rolled back", { participant: undefined, reason: undefined });
  expect(Object.keys(e)).toEqual(["code", "message", "retryable"]);
  expect(Object.keys(decodeBody(encodeBody(e)) as object)).toEqual(["code", "message", "retryable"]);
});
