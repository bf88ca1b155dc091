// Requests say what they mean, or are refused: every option and request field
// is checked strictly, by the client before it sends and by the sidecar when it
// receives, and a field nobody reads is BAD_REQUEST naming it. The seed's
// createTransaction shape (requirements, timeout in seconds) means what it says.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Client, connect, NotFoundError, ProtocolError } from "../../client/index.ts";
import { encodeFrame } from "../../src/protocol/frame.ts";
import { HttpParticipant } from "../helpers/http-participant.ts";
import { rawExchange } from "../helpers/raw-socket.ts";
import { SidecarProcess } from "../helpers/sidecar-process.ts";

let sc: SidecarProcess;
let dtx: Client;
const participants: HttpParticipant[] = [];
beforeAll(async () => {
  sc = await new SidecarProcess({ id: "strict" }).start();
  dtx = await connect({ socket: sc.socket });
});
afterAll(async () => {
  dtx?.close();
  for (const p of participants) p.stop();
  await sc?.cleanup();
});

function participant(id: string, behaviour: ConstructorParameters<typeof HttpParticipant>[1] = {}) {
  const p = new HttpParticipant(id, behaviour);
  participants.push(p);
  return p;
}

/** What the client library rejects with, before sending anything. */
async function refusal(p: Promise<unknown> | (() => unknown)): Promise<ProtocolError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError);
    return e as ProtocolError;
  }
  throw new Error("expected a refusal");
}

/** One raw request to the sidecar, bypassing the client's own checks. */
async function raw(body: Record<string, unknown>): Promise<{ ok: boolean; error?: { code: string; message: string } }> {
  const r = await rawExchange(sc.socket, encodeFrame({ id: 1, ...body }));
  return r.replies[0] as { ok: boolean; error?: { code: string; message: string } };
}

describe("the seed's createTransaction shape", () => {
  test("requirements { consistency: 'strong' } with 2PC participants runs 2PC, not a Saga", async () => {
    const p1 = participant("strong-a");
    const p2 = participant("strong-b");
    const t = await dtx.createTransaction({ name: "req-strong", requirements: { consistency: "strong", availability: "medium" } });
    await t.addParticipant({ participantId: "a", endpoint: p1.endpoint });
    await t.addParticipant({ participantId: "b", endpoint: p2.endpoint });
    const result = await t.execute();
    expect(result).toMatchObject({ outcome: "committed", protocol: "2pc" });
    expect(p1.appliedOps()).toEqual(["prepare:req-strong", "commit:req-strong"]);
    expect(p2.appliedOps()).toEqual(["prepare:req-strong", "commit:req-strong"]);
  });

  test("requirements.timeout is in seconds, as in the Kailash SDK", async () => {
    const slow = participant("slow", { hold: new Set(["execute"]) });
    const t = await dtx.createTransaction({ name: "req-timeout", requirements: { consistency: "eventual", timeout: 0.3 }, context: { orderId: "7" } });
    await t.addParticipant({ participantId: "slow", endpoint: slow.endpoint });
    const result = await t.execute();
    slow.release();
    expect(result.outcome).toBe("compensated");
    expect(result.reason).toContain("timed out after 300 ms");
  });

  test("requirements and the flat consistency/availability/timeoutMs together are refused, by the client and by the sidecar", async () => {
    const e = await refusal(dtx.createTransaction({ name: "req-both", requirements: { consistency: "strong" }, consistency: "eventual" }));
    expect(e.code).toBe("BAD_REQUEST");
    expect(e.message).toContain("consistency: give requirements or the flat consistency/availability/timeoutMs, not both");
    const r = await raw({ op: "o_create", name: "req-both", requirements: { timeout: 5 }, timeoutMs: 5000 });
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST" } });
    expect(r.error!.message).toContain("timeoutMs: give requirements");
    await expect(dtx.status("req-both")).rejects.toBeInstanceOf(NotFoundError);
  });

  test("a requirement the seed does not have is refused by name", async () => {
    const e = await refusal(dtx.createTransaction({ name: "req-iso", requirements: { consistency: "strong", isolation: "serializable" } as never }));
    expect(e.code).toBe("BAD_REQUEST");
    expect(e.message).toContain("requirements.isolation: unknown field");
    const r = await raw({ op: "o_create", name: "req-iso", requirements: { consistency: "strong", isolation: "serializable" } });
    expect(r.error).toMatchObject({ code: "BAD_REQUEST" });
    expect(r.error!.message).toContain("requirements.isolation: unknown field");
  });
});

describe("unknown fields are refused by name", () => {
  test("beginDistributed with { timeout } (not timeoutMs) is refused before anything is sent", async () => {
    let ran = false;
    const e = await refusal(dtx.beginDistributed("req-begin-opt", () => void (ran = true), { timeout: 100 } as never));
    expect(e.code).toBe("BAD_REQUEST");
    expect(e.message).toContain("timeout: unknown field");
    expect(ran).toBe(false);
    await expect(dtx.status("req-begin-opt")).rejects.toBeInstanceOf(NotFoundError);
  });

  test("the sidecar refuses a request with an unknown field by name, and the connection and sidecar stay up", async () => {
    for (const body of [
      { op: "begin", name: "req-raw-1", timeout: 100 },
      { op: "prepare", name: "req-raw-1", begin: { elapsedMs: 0, timeout: 100 } },
      { op: "commit", name: "req-raw-1", force: true },
      { op: "status", name: "req-raw-1", verbose: true },
      { op: "list", state: "prepared", offset: 10 },
    ]) {
      const r = await raw(body);
      const field = Object.keys(body).find((k) => !["op", "name", "state"].includes(k))!;
      expect({ body, r }).toMatchObject({ r: { ok: false, error: { code: "BAD_REQUEST" } } });
      expect(r.error!.message).toContain(field === "begin" ? "begin.timeout: unknown field" : `${field}: unknown field`);
    }
    await expect(dtx.status("req-raw-1")).rejects.toBeInstanceOf(NotFoundError);
    expect((await fetch(`${sc.baseUrl}/readyz`)).status).toBe(200);
  });

  test("a request with id 0 is refused (id 0 answers connection-level errors only)", async () => {
    const r = await raw({ id: 0, op: "status", name: "req-id0" });
    expect(r).toMatchObject({ ok: false, error: { code: "BAD_REQUEST" } });
    expect(r.error!.message).toContain("id:");
  });

  test("addParticipant refuses unknown keys, the seed's snake_case ones included, in the client and in the sidecar", async () => {
    const t = await dtx.createTransaction({ name: "req-add", consistency: "eventual" });
    const snake = await refusal(t.addParticipant({ participantId: "p", endpoint: "http://127.0.0.1:1/x", supports_2pc: true } as never));
    expect(snake.code).toBe("BAD_REQUEST");
    expect(snake.message).toContain("supports_2pc: unknown field");
    const policy = await refusal(t.addParticipant({ participantId: "p", endpoint: "http://127.0.0.1:1/x", retryPolicy: { retries: 3 } } as never));
    expect(policy.message).toContain("retryPolicy.retries: unknown field");
    const r = await raw({ op: "o_add", name: "req-add", participant: { participantId: "p", endpoint: "http://127.0.0.1:1/x", compensation_action: "refund" } });
    expect(r.error).toMatchObject({ code: "BAD_REQUEST" });
    expect(r.error!.message).toContain("participant.compensation_action: unknown field");
    expect((await t.getStatus()).participants).toEqual([]);
    await t.abort();
  });

  test("the client's own options refuse unknown keys: connect, register, list", async () => {
    const c = await refusal(connect({ socket: sc.socket, timeoutMs: 10 } as never));
    expect(c.message).toContain("connect options: timeoutMs: unknown field");
    const r = await refusal(dtx.register("req-svc", { prepare: () => true, rollback: () => true } as never));
    expect(r.message).toContain("rollback: unknown field");
    const l = await refusal(dtx.list({ state: "prepared", offset: 1 } as never));
    expect(l.message).toContain("offset: unknown field");
  });
});
