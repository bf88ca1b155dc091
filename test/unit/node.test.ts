// The 2PC engine called directly: Node.step(input) -> effects, no I/O. The
// log is a MemoryWal that is durable at once; persist effects are appended to
// it by the harness, as the runtime would.
import { describe, expect, test } from "bun:test";
import { limits, timing } from "../../src/limits.ts";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import { contextToken } from "../../src/protocol/token.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { Request } from "../sim/simulator.ts";

class Sidecar {
  node: Node;
  now = 1_000;
  private reqId = 0;

  constructor(
    readonly id: string,
    readonly wal = new MemoryWal(true),
    boot = "b1",
  ) {
    this.node = new Node({ id, bootId: boot, reader: wal });
  }

  step(input: Parameters<Node["step"]>[0]): Effect[] {
    const effects = this.node.step(input);
    const records = effects.flatMap((e) => (e.k === "persist" ? [e.rec] : []));
    if (records.length) this.wal.write(records);
    return effects;
  }

  client(req: Request, conn = 1): Effect[] {
    return this.step({ k: "client", from: { conn, id: ++this.reqId }, req: { ...req, id: this.reqId } as ClientInput, now: this.now });
  }

  peer(msg: PeerMessage): Effect[] {
    return this.step({ k: "peer", msg, now: this.now });
  }

  tick(ms: number): Effect[] {
    this.now += ms;
    return this.step({ k: "tick", now: this.now });
  }

  /** A restart: a new Node over the same log, fed what is unfinished. */
  restart(boot: string): Effect[] {
    this.node = new Node({ id: this.id, bootId: boot, reader: this.wal });
    return this.step({ k: "recover", ...this.wal.unfinished(), now: this.now });
  }
}

function reply(effects: Effect[]) {
  const r = effects.find((e) => e.k === "reply");
  if (!r || r.k !== "reply") throw new Error(`no reply in ${JSON.stringify(effects)}`);
  return r.body as { ok: boolean; error?: { code: string }; [k: string]: unknown };
}

function sends(effects: Effect[], t?: PeerMessage["t"]): Array<{ to: string; msg: PeerMessage }> {
  return effects.flatMap((e) => (e.k === "send" && (!t || e.msg.t === t) ? [{ to: e.to, msg: e.msg }] : []));
}

function persisted(effects: Effect[], r: string) {
  return effects.filter((e) => e.k === "persist" && e.rec.r === r);
}

/** Deliver every message a sidecar sends to itself, as the runtime's microtask would, until none are left. */
function settleSelf(sc: Sidecar, effects: Effect[]): Effect[] {
  const all = [...effects];
  let queue = sends(effects).filter((s) => s.to === sc.id);
  while (queue.length) {
    const next = sc.peer(queue.shift()!.msg);
    all.push(...next);
    queue.push(...sends(next).filter((s) => s.to === sc.id));
  }
  return all;
}

/** begin on A with one put in its own branch. */
function begun(a: Sidecar, name: string, key = "k", conn = 1) {
  const r = reply(a.client({ op: "begin", name }, conn));
  expect(r.ok).toBe(true);
  expect(reply(a.client({ op: "put", name, branch: r.branch as string, key, value: 1 }, conn)).ok).toBe(true);
  return { branch: r.branch as string, context: r.context as string };
}

/** A local transaction on A, prepared: returns the effects of the prepare. */
function prepared(a: Sidecar, name: string, key = "k") {
  const b = begun(a, name, key);
  const effects = settleSelf(a, a.client({ op: "prepare", name }));
  expect(reply(effects)).toMatchObject({ ok: true, state: "prepared" });
  return { ...b, effects };
}

describe("Node: coordinator", () => {
  test("prepare waits for joined branches to vote by themselves, and asks begin's own branch once they voted yes", () => {
    const a = new Sidecar("A");
    const { branch } = begun(a, "t1");
    a.peer({ t: "enlist", name: "t1", branch: "B.x.1", from: "B" });
    const effects = a.client({ op: "prepare", name: "t1" });
    expect(sends(effects, "prepare")).toEqual([]);
    expect(effects.some((e) => e.k === "reply")).toBe(false); // answered once every branch voted
    const voted = a.peer({ t: "vote", name: "t1", branch: "B.x.1", from: "B", vote: "yes" });
    expect(sends(voted, "prepare")).toEqual([{ to: "A", msg: { t: "prepare", name: "t1", branch, from: "A" } }]);
  });

  test("a joined branch whose vote does not come is asked to prepare again on tick", () => {
    const a = new Sidecar("A");
    begun(a, "t1");
    a.peer({ t: "enlist", name: "t1", branch: "B.x.1", from: "B" });
    a.client({ op: "prepare", name: "t1" });
    expect(sends(a.tick(timing.resendMs), "prepare")).toEqual([{ to: "B", msg: { t: "prepare", name: "t1", branch: "B.x.1", from: "A" } }]);
  });

  test("a second begin with an active name fails with NAME_IN_USE, also after a restart", () => {
    const a = new Sidecar("A");
    begun(a, "dup");
    expect(reply(a.client({ op: "begin", name: "dup" })).error?.code).toBe("NAME_IN_USE");
    const b = new Sidecar("B");
    prepared(b, "dup2");
    b.restart("b2");
    expect(reply(b.client({ op: "begin", name: "dup2" })).error?.code).toBe("NAME_IN_USE");
  });

  test("a commit decision is persisted before it is sent", () => {
    const a = new Sidecar("A");
    const { branch } = prepared(a, "t2");
    const effects = a.client({ op: "commit", name: "t2" });
    const decision = effects.findIndex((e) => e.k === "persist" && e.rec.r === "c.decision" && e.rec.outcome === "commit");
    const send = effects.findIndex((e) => e.k === "send" && e.msg.t === "decision");
    expect(decision).toBeGreaterThanOrEqual(0);
    expect(send).toBeGreaterThan(decision);
    expect(sends(effects, "decision")[0].msg).toEqual({ t: "decision", name: "t2", branch, from: "A", outcome: "commit" });
  });

  test("the coordinator records 'all voted yes' (c.prepared) in the step that answers prepare", () => {
    const a = new Sidecar("A");
    const { effects } = prepared(a, "t3");
    const step = effects.findIndex((e) => e.k === "persist" && e.rec.r === "c.prepared");
    const answer = effects.findIndex((e) => e.k === "reply");
    expect(step).toBeGreaterThanOrEqual(0);
    expect(answer).toBeGreaterThan(step);
  });

  test("a recovered prepared coordinator waits for its client's decision", () => {
    const a = new Sidecar("A");
    const { branch } = prepared(a, "t4");
    const recovered = a.restart("b2");
    expect(sends(recovered, "decision")).toEqual([]);
    let later: Effect[] = [];
    for (let i = 0; i < 200; i++) later.push(...a.tick(timing.resendMs));
    later = later.filter((e) => e.k === "persist" || (e.k === "send" && e.msg.t === "decision"));
    expect(later.filter((e) => e.k === "persist" && e.rec.r.startsWith("c."))).toEqual([]);
    expect(reply(a.client({ op: "status", name: "t4" }))).toMatchObject({ ok: true, state: "prepared" });
    const commit = a.client({ op: "commit", name: "t4" });
    expect(persisted(commit, "c.decision")).toHaveLength(1);
    expect(sends(commit, "decision")[0].msg).toMatchObject({ branch, outcome: "commit" });
  });

  test("a query about a transaction the coordinator never recorded is answered rollback (presumed abort)", () => {
    const a = new Sidecar("A");
    const effects = a.peer({ t: "query", name: "ghost", branch: "B.x.1", from: "B" });
    expect(sends(effects)).toEqual([{ to: "B", msg: { t: "decision", name: "ghost", branch: "B.x.1", from: "A", outcome: "rollback" } }]);
  });
});

describe("Node: participant", () => {
  /** B joins A's transaction t and puts key = 1 (or only reads it). */
  /** Join, read k, maybe write it, end: returns the branch and the end step's effects. */
  function joinAndEnd(b: Sidecar, token: string, name: string, readOnly = false) {
    const enlist = sends(b.client({ op: "join", token }, 7), "enlist");
    expect(enlist).toHaveLength(1);
    const branch = (enlist[0].msg as { branch: string }).branch;
    expect(reply(b.peer({ t: "enlisted", name, branch, from: "A" }))).toMatchObject({ ok: true, branch });
    expect(reply(b.client({ op: "get", name, branch, key: "k" }, 7)).ok).toBe(true);
    if (!readOnly) expect(reply(b.client({ op: "put", name, branch, key: "k", value: 2 }, 7)).ok).toBe(true);
    const ended = b.client({ op: "end", name, branch, ok: true }, 7);
    expect(reply(ended).ok).toBe(true);
    return { branch, ended };
  }
  const joined = (b: Sidecar, token: string, name: string, readOnly = false) => joinAndEnd(b, token, name, readOnly).branch;

  test("a joined branch prepares when its callback ends: the yes vote follows its prepared record in the same step", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const { context } = begun(a, "p1");
    const { branch, ended } = joinAndEnd(b, context, "p1");
    const record = ended.findIndex((e) => e.k === "persist" && e.rec.r === "p.prepared");
    const vote = ended.findIndex((e) => e.k === "send" && e.msg.t === "vote");
    expect(record).toBeGreaterThanOrEqual(0);
    expect(vote).toBeGreaterThan(record);
    expect(sends(ended, "vote")[0].msg).toMatchObject({ vote: "yes", branch });
    // The end answer promises only that the work arrived, so it does not wait for the prepared record.
    expect(ended.find((e) => e.k === "reply")).toMatchObject({ unlogged: true });
    // Asked again by the coordinator, it votes yes again and logs nothing new.
    const again = b.peer({ t: "prepare", name: "p1", branch, from: "A" });
    expect(again.filter((e) => e.k === "persist")).toEqual([]);
    expect(sends(again, "vote")[0].msg).toMatchObject({ vote: "yes", branch });
  });

  test("a coordinator that has a remote branch's early yes does not ask it to prepare", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const { context } = begun(a, "p9");
    const { branch, ended } = joinAndEnd(b, context, "p9");
    a.peer(sends(ended, "vote")[0].msg);
    const prepare = a.client({ op: "prepare", name: "p9" }, 3);
    expect(sends(prepare, "prepare").map((s) => s.to)).toEqual(["A"]);
    expect(sends(prepare, "prepare").map((s) => (s.msg as { branch: string }).branch)).not.toContain(branch);
  });

  test("a read-only branch votes readonly and logs nothing", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const { context } = begun(a, "p2");
    const branch = joined(b, context, "p2", true);
    const effects = b.peer({ t: "prepare", name: "p2", branch, from: "A" });
    expect(effects.filter((e) => e.k === "persist")).toEqual([]);
    expect(sends(effects, "vote")[0].msg).toMatchObject({ vote: "readonly", branch });
  });

  test("a key locked by another prepared transaction makes the branch vote no, as a conflict", () => {
    const a = new Sidecar("A");
    prepared(a, "first", "shared");
    begun(a, "second", "shared");
    const effects = settleSelf(a, a.client({ op: "prepare", name: "second" }));
    expect(sends(effects, "vote")[0].msg).toMatchObject({ vote: "no", conflict: true });
    expect(reply(effects).error?.code).toBe("TRANSACTION_CONFLICT");
  });

  test("an in-doubt branch asks its coordinator on tick and never decides alone", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const { context } = begun(a, "p3");
    const branch = joined(b, context, "p3");
    b.peer({ t: "prepare", name: "p3", branch, from: "A" });
    const recovered = b.restart("b2");
    expect(recovered.filter((e) => e.k === "persist")).toEqual([]);
    const later: Effect[] = [];
    for (let i = 0; i < 100; i++) later.push(...b.tick(timing.askCoordinatorMs / 2));
    expect(later.filter((e) => e.k === "persist")).toEqual([]);
    const queries = sends(later, "query");
    expect(queries.length).toBeGreaterThanOrEqual(40);
    expect(queries.every((q) => q.to === "A" && (q.msg as { branch: string }).branch === branch)).toBe(true);
    expect(sends(later).length).toBe(queries.length);
    // Only the coordinator's answer ends it.
    const decided = b.peer({ t: "decision", name: "p3", branch, from: "A", outcome: "rollback" });
    expect(persisted(decided, "p.end")).toHaveLength(1);
  });
});

describe("Node: begin's branch chosen by the client", () => {
  test("prepare may carry the begin: one request opens, writes and prepares a transaction", () => {
    const a = new Sidecar("A");
    const effects = settleSelf(a, a.client({ op: "prepare", name: "t1", branch: "A.cX", writes: [["k", 1, false]], begin: { elapsedMs: 5 } }));
    expect(reply(effects)).toEqual({ ok: true, name: "t1", state: "prepared", protocol: "2pc" });
    expect(persisted(effects, "p.prepared")).toHaveLength(1);
    expect(a.node.coords.get("t1")).toMatchObject({ ownBranch: "A.cX", createdAt: a.now - 5 });
  });

  test("a begin carried by prepare after its timeout has passed rolls back", () => {
    const a = new Sidecar("A");
    const r = reply(settleSelf(a, a.client({ op: "prepare", name: "t1", branch: "A.cX", writes: [["k", 1, false]], begin: { timeoutMs: 100, elapsedMs: 100 } })));
    expect(r).toMatchObject({ ok: false, error: { code: "TRANSACTION_ABORTED" } });
    expect(a.node.coords.get("t1")?.state).toBe("rolled_back");
  });

  test("a carried begin with an active name fails with NAME_IN_USE and leaves that transaction alone", () => {
    const a = new Sidecar("A");
    begun(a, "t1");
    expect(reply(a.client({ op: "prepare", name: "t1", branch: "A.cY", begin: { elapsedMs: 0 } })).error?.code).toBe("NAME_IN_USE");
    expect(a.node.coords.get("t1")?.state).toBe("active");
  });

  test("prepare and rollback that name another branch never reach the transaction of the same name", () => {
    const a = new Sidecar("A");
    begun(a, "t1");
    expect(reply(a.client({ op: "prepare", name: "t1", branch: "A.cOther" })).error?.code).toBe("NOT_FOUND");
    expect(reply(a.client({ op: "rollback", name: "t1", branch: "A.cOther" })).error?.code).toBe("NOT_FOUND");
    expect(a.node.coords.get("t1")?.state).toBe("active");
  });

  test("a begin with the id of a branch this name already has, or with an id not of this sidecar, is refused", () => {
    const a = new Sidecar("A");
    expect(reply(a.client({ op: "begin", name: "t0", branch: "B.cX" })).error?.code).toBe("BAD_REQUEST");
    expect(reply(a.client({ op: "begin", name: "t0", branch: "A.c.toolongforagid" })).error?.code).toBe("BAD_REQUEST");
    expect(reply(a.client({ op: "begin", name: "t1", branch: "A.cX" })).ok).toBe(true);
    expect(reply(settleSelf(a, a.client({ op: "rollback", name: "t1", branch: "A.cX" }))).ok).toBe(true);
    expect(reply(a.client({ op: "begin", name: "t1", branch: "A.cX" })).error?.code).toBe("BAD_REQUEST");
  });

  test("a join whose token overtook its begin is held by the coordinator and enlisted once the begin is in", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const token = contextToken("t1", "A", "A.cX", 30_000);
    const enlist = sends(b.client({ op: "join", token }, 7), "enlist")[0].msg;
    expect(a.peer(enlist)).toEqual([]); // held: no refusal, no second round trip
    const begun = a.client({ op: "begin", name: "t1", branch: "A.cX" });
    expect(reply(begun).context).toBe(token);
    expect(persisted(begun, "c.enlist")).toHaveLength(1);
    const enlisted = sends(begun, "enlisted")[0].msg;
    expect(reply(b.peer(enlisted))).toMatchObject({ ok: true, name: "t1" });
  });

  test("a held enlist whose begin does not come within enlistParkMs is refused as unknown, and the joiner asks again at once", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    const enlist = sends(b.client({ op: "join", token: contextToken("t1", "A", "A.cX", 30_000) }, 7), "enlist")[0].msg;
    expect(a.peer(enlist)).toEqual([]);
    expect(sends(a.tick(timing.enlistParkMs - 1), "enlist_refused")).toHaveLength(0);
    const refused = sends(a.tick(1), "enlist_refused")[0].msg;
    expect(refused).toMatchObject({ unknown: true });
    const again = b.peer(refused);
    expect(again.some((e) => e.k === "reply")).toBe(false); // still joining
    expect(sends(again, "enlist")).toEqual([{ to: "A", msg: enlist }]);
    expect(a.peer(enlist)).toEqual([]);
    expect(reply(a.client({ op: "begin", name: "t1", branch: "A.cX" })).ok).toBe(true);
  });

  test("a token that overtook its begin is held, also while a finished transaction of the same name is in memory", () => {
    const a = new Sidecar("A");
    const b = new Sidecar("B");
    expect(reply(a.client({ op: "begin", name: "t1", branch: "A.cOld" })).ok).toBe(true);
    expect(reply(settleSelf(a, a.client({ op: "rollback", name: "t1", branch: "A.cOld" }))).ok).toBe(true);
    const enlist = sends(b.client({ op: "join", token: contextToken("t1", "A", "A.cNew", 30_000) }, 7), "enlist")[0].msg;
    expect(a.peer(enlist)).toEqual([]);
    const begun = a.client({ op: "begin", name: "t1", branch: "A.cNew" });
    expect(reply(begun).ok).toBe(true);
    expect(reply(b.peer(sends(begun, "enlisted")[0].msg))).toMatchObject({ ok: true, name: "t1" });
  });

  test("a held enlist whose begin names another branch is refused as an earlier transaction's token", () => {
    const a = new Sidecar("A");
    const enlist = { t: "enlist", name: "t1", branch: "B.cJ", from: "B", incarnation: "A.cOld" } as const;
    expect(a.peer(enlist)).toEqual([]);
    const begun = a.client({ op: "begin", name: "t1", branch: "A.cNew" });
    expect(reply(begun).ok).toBe(true);
    expect(sends(begun, "enlist_refused")[0].msg).toMatchObject({ name: "t1", branch: "B.cJ" });
    expect(a.node.coords.get("t1")?.branches.has("B.cJ")).toBe(false);
  });

  test(`at most parkedEnlistsMax (${limits.parkedEnlistsMax}) enlists are held; beyond that an unknown name is refused at once`, () => {
    const a = new Sidecar("A");
    for (let i = 0; i < limits.parkedEnlistsMax; i++) expect(a.peer({ t: "enlist", name: `t${i}`, branch: `B.c${i}`, from: "B", incarnation: "A.cX" })).toEqual([]);
    expect(sends(a.peer({ t: "enlist", name: "over", branch: "B.cO", from: "B", incarnation: "A.cX" }), "enlist_refused")[0].msg).toMatchObject({ unknown: true });
    expect(sends(a.tick(timing.enlistParkMs), "enlist_refused")).toHaveLength(limits.parkedEnlistsMax);
    expect(a.peer({ t: "enlist", name: "later", branch: "B.cL", from: "B", incarnation: "A.cX" })).toEqual([]);
  });

  test("after the one repeat, an unknown name is asked again each tick, and refused once resendMs has passed", () => {
    const b = new Sidecar("B");
    const enlist = sends(b.client({ op: "join", token: contextToken("t1", "A", "A.cX", 30_000) }, 7), "enlist")[0].msg;
    const refusal = { t: "enlist_refused", name: "t1", branch: (enlist as { branch: string }).branch, from: "A", reason: "unknown", unknown: true } as const;
    expect(sends(b.peer(refusal), "enlist")).toHaveLength(1);
    expect(sends(b.peer(refusal), "enlist")).toHaveLength(0);
    expect(sends(b.tick(timing.tickMs), "enlist")).toHaveLength(1);
    b.tick(timing.resendMs);
    expect(reply(b.peer(refusal))).toMatchObject({ ok: false, error: { code: "INVALID_STATE" } });
  });
});

describe("Node: an end that carries its join", () => {
  const token = contextToken("t1", "A", "A.cX", 30_000);
  const end = (ok: boolean): Request => ({ op: "end", name: "t1", branch: "B.cJ", join: token, ok, writes: [["k", 2, false]] });

  test("the branch is enlisted first; then it takes the writes, answers, and votes yes once prepared", () => {
    const b = new Sidecar("B");
    const joined = b.client(end(true), 7);
    expect(joined.some((e) => e.k === "reply")).toBe(false);
    expect(sends(joined, "enlist")).toEqual([{ to: "A", msg: { t: "enlist", name: "t1", branch: "B.cJ", from: "B", incarnation: "A.cX" } }]);
    const ended = b.peer({ t: "enlisted", name: "t1", branch: "B.cJ", from: "A" });
    expect(reply(ended)).toEqual({ ok: true });
    expect(persisted(ended, "p.prepared")).toHaveLength(1);
    expect(sends(ended, "vote")).toEqual([{ to: "A", msg: { t: "vote", name: "t1", branch: "B.cJ", from: "B", vote: "yes" } }]);
  });

  test("a carried end with ok false is enlisted and votes no, so the transaction rolls back", () => {
    const b = new Sidecar("B");
    b.client(end(false), 7);
    const ended = b.peer({ t: "enlisted", name: "t1", branch: "B.cJ", from: "A" });
    expect(reply(ended)).toEqual({ ok: true });
    expect(sends(ended, "vote")[0].msg).toMatchObject({ vote: "no" });
  });

  test("a refused join fails the end, and nothing is prepared", () => {
    const b = new Sidecar("B");
    b.client(end(true), 7);
    const refused = b.peer({ t: "enlist_refused", name: "t1", branch: "B.cJ", from: "A", reason: "transaction \"t1\" is prepared" });
    expect(reply(refused)).toMatchObject({ ok: false, error: { code: "INVALID_STATE" } });
    expect(persisted(refused, "p.prepared")).toHaveLength(0);
  });

  test("a token of another transaction than the end names is refused before anything is sent", () => {
    const b = new Sidecar("B");
    const effects = b.client({ ...end(true), name: "t2" } as Request, 7);
    expect(reply(effects).error?.code).toBe("BAD_REQUEST");
    expect(sends(effects)).toEqual([]);
  });
});

describe("Node: regressions found by the simulator", () => {
  test("prepare does not end a joined branch on the coordinator's own sidecar (seed 2)", () => {
    const a = new Sidecar("A");
    const { context } = begun(a, "r1");
    const join = settleSelf(a, a.client({ op: "join", token: context }, 7));
    const joinedBranch = reply(join).branch as string;
    // The coordinator's client prepares before the joined service ended its branch.
    settleSelf(a, a.client({ op: "prepare", name: "r1" }));
    expect(reply(a.client({ op: "put", name: "r1", branch: joinedBranch, key: "j", value: 1 }, 7)).ok).toBe(true);
    // The joined service hangs up before ending: its branch rolls back, and so does the transaction.
    const gone = settleSelf(a, a.step({ k: "disconnect", conn: 7, now: a.now }));
    expect(sends(gone, "vote").map((s) => s.msg)).toContainEqual(expect.objectContaining({ branch: joinedBranch, vote: "no" }));
    expect(a.node.coords.get("r1")?.outcome).toBe("rollback");
  });

  test("status on the coordinator's sidecar never calls a transaction prepared that its coordinator has no record of", () => {
    const a = new Sidecar("A");
    begun(a, "r2");
    // The branch's prepared record is durable, the coordinator's is not: a crash here loses the coordinator.
    const prepare = a.client({ op: "prepare", name: "r2" });
    a.peer(sends(prepare, "prepare")[0].msg);
    // Recovery rolls the branch back at once (presumed abort: its coordinator, this node, has no record of it).
    a.restart("b2");
    expect(reply(a.client({ op: "status", name: "r2" }))).toMatchObject({ ok: true, state: "rolled_back", participants: [{ vote: "yes", acked: true }] });
    settleSelf(a, a.tick(timing.askCoordinatorMs));
    expect(reply(a.client({ op: "status", name: "r2" }))).toMatchObject({ ok: true, state: "rolled_back" });
  });

  test("a prepared branch left from an earlier transaction of the same name is rolled back, not committed with the new one", () => {
    const a = new Sidecar("A");
    const { branch: stale } = begun(a, "again", "old-key");
    // The branch prepares durably; the sidecar dies before its coordinator recorded anything.
    a.peer(sends(a.client({ op: "prepare", name: "again" }), "prepare")[0].msg);
    // Recovery finds the branch's coordinator (this node) without a record of it: presumed abort, at once.
    const recovered = a.restart("b2");
    const staleEnd = recovered.find((e) => e.k === "persist" && e.rec.r === "p.end" && e.rec.branch === stale);
    expect(staleEnd).toMatchObject({ rec: { outcome: "rollback" } });
    // The client learned nothing and retries the same name at once: the name is free, and it commits alone.
    prepared(a, "again", "new-key");
    expect(persisted(a.client({ op: "commit", name: "again" }), "c.decision")).toHaveLength(1);
    settleSelf(a, a.tick(timing.tickMs));
    expect(a.wal.kvGet("old-key")).toBeUndefined();
  });
});

describe("trace context and token incarnation", () => {
  const sends = (effects: Effect[]) => effects.flatMap((e) => (e.k === "send" ? [e.msg] : []));
  const replies = (effects: Effect[]) => effects.flatMap((e) => (e.k === "reply" ? [e.body as Record<string, unknown>] : []));

  test("every message about a traced transaction carries its traceparent", () => {
    const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const a = new Sidecar("A");
    const begun = replies(a.client({ op: "begin", name: "t1", traceparent: tp }))[0];
    const b = new Sidecar("B");
    const enlist = sends(b.client({ op: "join", token: begun.context as string }));
    expect(enlist[0]).toMatchObject({ t: "enlist", traceparent: tp });
    const enlisted = sends(a.peer(enlist[0]));
    expect(enlisted.every((m) => m.traceparent === tp)).toBe(true);
    expect(sends(a.client({ op: "prepare", name: "t1" }))).toEqual([]);
    const own = sends(a.peer({ t: "vote", name: "t1", branch: (enlist[0] as { branch: string }).branch, from: "B", vote: "yes" }));
    expect(own).toMatchObject([{ t: "prepare", traceparent: tp }]);
  });

  test("a token from an earlier transaction with the same name cannot join the new one", () => {
    const a = new Sidecar("A");
    const first = replies(a.client({ op: "begin", name: "reused" }))[0];
    // Deliver the rollback to the first incarnation's own branch, and its ack back.
    for (const decision of sends(a.client({ op: "rollback", name: "reused" }))) for (const ack of sends(a.peer(decision))) a.peer(ack);
    const second = replies(a.client({ op: "begin", name: "reused" }))[0];
    expect(second.ok).toBe(true);
    const b = new Sidecar("B");
    const [staleEnlist] = sends(b.client({ op: "join", token: first.context as string }));
    const answer = sends(a.peer(staleEnlist));
    expect(answer[0]).toMatchObject({ t: "enlist_refused" });
    expect((answer[0] as { reason: string }).reason).toContain("earlier transaction");
    const [freshEnlist] = sends(b.client({ op: "join", token: second.context as string }));
    expect(sends(a.peer(freshEnlist))[0]).toMatchObject({ t: "enlisted" });
  });
});

describe("Node: the views the sidecar reads", () => {
  test("branchLive, inDoubtBranches and transactionsByState follow a transaction from prepared to committed", () => {
    const a = new Sidecar("A");
    const { branch } = prepared(a, "t1");
    expect(a.node.branchLive("t1", branch)).toBe(true);
    expect(a.node.branchLive("t1", "A.other")).toBe(false);
    expect(a.node.inDoubtBranches()).toBe(1);
    expect(a.node.transactionsByState()).toEqual({ prepared: 1 });
    expect(reply(settleSelf(a, a.client({ op: "commit", name: "t1" })))).toMatchObject({ ok: true, outcome: "committed" });
    expect(a.node.branchLive("t1", branch)).toBe(false);
    expect(a.node.inDoubtBranches()).toBe(0);
    expect(a.node.transactionsByState()).toEqual({ committed: 1 });
  });
});
