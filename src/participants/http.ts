// HTTP participants speaking the seed's protocol:
//   POST {endpoint}/prepare {transaction_id, context} → {vote: "prepared" | "abort"}
//   POST {endpoint}/commit | /abort                 (2PC phase 2)
//   POST {endpoint}/execute | /compensate           (Saga)
// Every call carries an Idempotency-Key header (and idempotency_key in the
// body) that is the same for every retry of one operation.
// Timeouts, connection errors and 5xx are retried; for prepare and execute a
// 4xx (other than 408/429) or {status: "failure"} is a definitive no.
// A call that failed before any byte could leave (the connection was refused,
// the host does not resolve or cannot be routed to) is marked reached: false;
// a timeout or a reset after connecting may have delivered it, and is not.
import type { ParticipantCall } from "../txn/types.ts";
import type { CallOutcome } from "./outcome.ts";

/** Error codes of fetch (Bun's and Node's spellings) that prove the request was never sent. */
const neverSent = new Set(["ECONNREFUSED", "ConnectionRefused", "ENOTFOUND", "EAI_AGAIN", "EAI_NONAME", "FailedToOpenSocket", "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"]);

function errorCode(e: unknown): unknown {
  const err = e as { code?: unknown; cause?: { code?: unknown } } | null;
  return err?.code ?? err?.cause?.code;
}

export async function callHttp(call: ParticipantCall): Promise<CallOutcome> {
  const url = `${call.endpoint.replace(/\/+$/, "")}/${call.op}`;
  const body = {
    transaction_id: call.name,
    participant_id: call.participantId,
    context: call.context ?? null,
    payload: call.payload ?? null,
    idempotency_key: call.idempotencyKey,
    ...(call.op === "compensate" ? { compensation_action: call.action ?? null } : { action: call.action ?? null }),
  };
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": call.idempotencyKey },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(call.timeoutMs),
    });
  } catch (e) {
    const error = `${url}: ${(e as Error).message}`;
    return neverSent.has(String(errorCode(e))) ? { outcome: "retry", error, reached: false } : { outcome: "retry", error };
  }
  const text = await res.text().catch(() => "");
  let json: Record<string, unknown> = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { text };
  }
  const definitive = call.op === "prepare" || call.op === "execute";
  if (res.status >= 500 || res.status === 408 || res.status === 429) return { outcome: "retry", error: `${url}: HTTP ${res.status} ${text.slice(0, 200)}` };
  if (res.status >= 400) return { outcome: definitive ? "fail" : "retry", error: `${url}: HTTP ${res.status} ${text.slice(0, 200)}` };
  if (call.op === "prepare") {
    if (json.vote === "prepared") return { outcome: "ok", result: json };
    return { outcome: "fail", error: `${call.participantId} voted ${JSON.stringify(json.vote ?? "nothing")}${json.reason ? `: ${json.reason}` : ""}` };
  }
  if (definitive && json.status === "failure") return { outcome: "fail", error: `${call.participantId}: ${String(json.reason ?? "failure")}` };
  return { outcome: "ok", result: json };
}
