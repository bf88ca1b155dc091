// Simulated clients: bank transfers between accounts on different sidecars.
// A client begins on a coordinator, moves an amount out of one account, has a
// second service join with the context token and move it into another (or
// only read, so its branch votes read-only), then prepares and decides. Along
// the way it may fail its callback, end its branch with ok:false, hang up,
// be cut off mid-call or simply stall. A client that loses a prepare or a
// decision asks `status` later and finishes the job, as DESIGN §4 promises.
//
// Each transaction records what its client was told, for invariant 6.
import { ErrorCode } from "../../src/protocol/errors.ts";
import { contextToken } from "../../src/protocol/token.ts";
import type { Outcome } from "../../src/wal/records.ts";
import type { Answer, Conn, Request, Sim } from "./simulator.ts";

export interface TxnRecord {
  name: string;
  coordinator: string;
  /** Branches the client was told exist: begin's, and each acknowledged join. */
  branches: Map<string, { node: string; joined: boolean; wrote: boolean; writes?: [string, unknown, boolean][] }>;
  /** Writes are buffered and sent with prepare/end, as the client library does, instead of one put each. */
  buffered: boolean;
  /** Acknowledged balance changes, keyed "node key": applied to the store iff the transaction commits. */
  deltas: Map<string, number>;
  prepareAck: boolean;
  commitAck: boolean;
  commitSent: boolean;
  /** Why the client knows this transaction can never commit, if it does. */
  mustNotCommit?: string;
  intended?: Outcome;
  /** The client flow ended (finished, gave up, or stalled on purpose). */
  done: boolean;
  abandoned: boolean;
  /** Begin's branch id, when the client chose it (then prepare and rollback name it). */
  ownBranch?: string;
  /** A blind transaction is begun by its prepare (the client library's path for a callback that only writes). */
  carriedBegin?: { timeoutMs: number; preparedTimeoutMs?: number; elapsedMs: number };
  /** Keys written blind (no read first): there iff the transaction committed, or never (`absent`: its branch was refused). */
  receipts: { node: string; key: string; value: number; absent?: true }[];
}

type Ok = Extract<Answer, { ok: true }>;

const isOk = (a: Answer): a is Ok => !("lost" in a) && a.ok;
const isLost = (a: Answer): a is { lost: true } => "lost" in a;
const errorCode = (a: Answer): string | undefined => ("lost" in a || a.ok ? undefined : a.error.code);
const refusal = new Set<string>([ErrorCode.TRANSACTION_ABORTED, ErrorCode.TRANSACTION_CONFLICT]);

export class Bank {
  readonly txns: TxnRecord[] = [];
  readonly accounts: Array<{ node: string; key: string }> = [];
  private readonly byName = new Map<string, TxnRecord>();
  private inFlight = 0;
  private carriedJoins = 0;

  constructor(
    private readonly sim: Sim,
    private readonly accountsPerNode: number,
  ) {
    for (const node of sim.nodeIds) for (let i = 0; i < accountsPerNode; i++) this.accounts.push({ node, key: `acct/${node}/${i}` });
  }

  txn(name: string): TxnRecord | undefined {
    return this.byName.get(name);
  }

  /** Client flows that have not finished, for the liveness check. */
  waiting(): string[] {
    const open = this.txns.filter((t) => !t.done).map((t) => `the client of ${t.name} is still waiting`);
    if (this.inFlight) open.push(`${this.inFlight} client calls unanswered`);
    return open;
  }

  /** A read outside any transaction: checked durable by the simulator when answered. */
  readOutside(): void {
    const a = this.sim.rng.pick(this.accounts);
    this.call(undefined, this.sim.openConn(a.node), { op: "get", key: a.key }, () => {});
  }

  /** One transfer, start to finish. */
  start(): void {
    const rng = this.sim.rng;
    // A client can only begin on a sidecar that is up.
    const up = this.sim.nodes.filter((sn) => sn.node).map((sn) => sn.id);
    if (up.length === 0) return;
    const t: TxnRecord = {
      name: `t${this.txns.length + 1}`,
      coordinator: rng.pick(up),
      branches: new Map(),
      deltas: new Map(),
      prepareAck: false,
      commitAck: false,
      commitSent: false,
      done: false,
      abandoned: false,
      buffered: rng.chance(0.5),
      receipts: [],
    };
    this.txns.push(t);
    this.byName.set(t.name, t);
    const amount = rng.range(2, 9);
    // Zero to two other services join, on any node (the coordinator's too); each takes a share of the amount, or only reads.
    const joins = rng.chance(0.15) ? 0 : rng.chance(0.7) ? 1 : 2;
    const shares = joins === 2 ? [1, amount - 1] : [amount];
    const joiners = Array.from({ length: joins }, (_, i) => ({ node: rng.pick(this.sim.nodeIds), share: shares[i], readOnly: rng.chance(0.15) }));
    const earlyPrepare = this.fault(0.05);
    const conn = this.sim.openConn(t.coordinator);
    // Some transactions let the coordinator roll them back if no decision comes in time after prepare.
    const preparedTimeoutMs = rng.chance(0.2) ? rng.range(50, 1_000) : undefined;
    const timeoutMs = rng.range(300, 2_000);
    if (joins === 0 && rng.chance(0.2)) return this.blind(t, conn, amount, timeoutMs, preparedTimeoutMs);
    // Like beginDistributed: prepare when the callback (own work, then the joined service) is done; roll back if it throws.
    const run = (branch: string, context: string) => {
      t.branches.set(branch, { node: t.coordinator, joined: false, wrote: false });
      let waiting = 1 + joiners.length;
      let decided = false;
      const sideDone = (ok: boolean, ownSide: boolean) => {
        if (t.abandoned || decided) return;
        waiting--;
        // The callback failed (its own part or the joined service's), or throws for reasons of its own.
        if (!ok || this.fault(0.03)) {
          decided = true;
          return this.rollbackActive(t, conn);
        }
        if (waiting === 0 || (ownSide && earlyPrepare)) {
          decided = true;
          this.prepare(t, conn);
        }
      };
      this.transfer(t, conn, branch, t.coordinator, -amount, false, (r) => sideDone(r === "ok", true));
      for (const j of joiners) this.joinSide(t, context, j.node, j.share, j.readOnly, (ok) => sideDone(ok, false));
    };
    if (rng.chance(0.5)) {
      // As the client library does: the branch id is chosen here and the callback runs without waiting for
      // begin's answer, so the token may reach a joined service's sidecar (and its enlist the coordinator) first.
      t.ownBranch = `${t.coordinator}.c${t.name}`;
      this.call(t, conn, { op: "begin", name: t.name, branch: t.ownBranch, timeoutMs, preparedTimeoutMs }, (a) => {
        if (isLost(a)) t.mustNotCommit ??= "its coordinator died before begin was answered";
        else if (!isOk(a)) this.unexpected(t, "begin", a);
      });
      return run(t.ownBranch, contextToken(t.name, t.coordinator, t.ownBranch, timeoutMs));
    }
    this.call(t, conn, { op: "begin", name: t.name, timeoutMs, preparedTimeoutMs }, (a) => {
      if (isLost(a)) {
        t.mustNotCommit = "its coordinator died before begin was answered";
        return this.finish(t);
      }
      if (!isOk(a)) return this.unexpected(t, "begin", a);
      run(a.branch as string, a.context as string);
    });
  }

  /** A callback that only writes (a receipt): the client library sends no begin, its prepare carries it. */
  private blind(t: TxnRecord, conn: Conn, amount: number, timeoutMs: number, preparedTimeoutMs?: number): void {
    t.ownBranch = `${t.coordinator}.c${t.name}`;
    const key = `rcpt/${t.name}`;
    t.receipts.push({ node: t.coordinator, key, value: amount });
    // The callback may have run past the timeout: then the prepare must roll it back.
    t.carriedBegin = { timeoutMs, preparedTimeoutMs, elapsedMs: this.sim.rng.int(timeoutMs + timeoutMs / 4) };
    t.branches.set(t.ownBranch, { node: t.coordinator, joined: false, wrote: true, writes: [[key, amount, false]] });
    this.prepare(t, conn);
  }

  private fault(p: number): boolean {
    return this.sim.faultsOn && this.sim.rng.chance(p);
  }

  private call(t: TxnRecord | undefined, conn: Conn, req: Request, cb: (a: Answer) => void): void {
    this.inFlight++;
    this.sim.call(conn, req, (a) => {
      this.inFlight--;
      cb(a);
      // What the client was told may change what must hold: check this transaction after the event.
      if (t) this.sim.checker.touch(t.name);
    });
  }

  private finish(t: TxnRecord): void {
    t.done = true;
  }

  /** The client hangs for good without closing anything; timeouts must clean up. */
  private abandon(t: TxnRecord): void {
    t.abandoned = true;
    t.done = true;
  }

  private unexpected(t: TxnRecord, op: string, a: Answer): void {
    const why = isLost(a) ? "nothing (connection lost)" : JSON.stringify(a);
    this.sim.checker.fail("6", `${t.name}: ${op} answered ${why}, which the client's own actions cannot explain`);
  }

  /** Read an account in the branch, then write balance + delta (or only read). */
  private transfer(t: TxnRecord, conn: Conn, branch: string, node: string, delta: number, readOnly: boolean, done: (r: "ok" | "failed" | "lost") => void): void {
    if (this.fault(this.sim.faults.disconnectP)) {
      this.sim.disconnect(conn);
      t.mustNotCommit ??= "a client hung up before prepare";
      return done("lost");
    }
    if (this.fault(this.sim.faults.abandonP)) return this.abandon(t);
    const key = `acct/${node}/${this.sim.rng.int(this.accountsPerNode)}`;
    this.call(t, conn, { op: "get", name: t.name, branch, key }, (a) => {
      if (t.abandoned) return;
      if (isLost(a)) return done("lost");
      if (!isOk(a)) return this.refused(t, "get", a, () => done("failed"));
      if (readOnly) return done("ok");
      const balance = a.found ? (a.value as number) : 0;
      const next = balance + delta;
      const k = `${node} ${key}`;
      if (t.buffered) {
        const b = t.branches.get(branch)!;
        (b.writes ??= []).push([key, next === 0 ? null : next, next === 0]);
        b.wrote = true;
        t.deltas.set(k, (t.deltas.get(k) ?? 0) + delta);
        return done("ok");
      }
      const write = next === 0 ? ({ op: "delete", name: t.name, branch, key } as const) : ({ op: "put", name: t.name, branch, key, value: next } as const);
      this.call(t, conn, write, (w) => {
        if (t.abandoned) return;
        if (isLost(w)) return done("lost");
        if (!isOk(w)) return this.refused(t, write.op, w, () => done("failed"));
        t.branches.get(branch)!.wrote = true;
        t.deltas.set(k, (t.deltas.get(k) ?? 0) + delta);
        done("ok");
      });
    });
  }

  /**
   * A branch operation was refused. Explained only by a rollback: TRANSACTION_ABORTED, or NOT_FOUND once the
   * rolled-back branch was forgotten (evictAfterMs). Anything else the client's own actions cannot explain.
   */
  private refused(t: TxnRecord, op: string, a: Answer, then: () => void): void {
    const code = errorCode(a);
    if (code !== ErrorCode.TRANSACTION_ABORTED && code !== ErrorCode.NOT_FOUND) return this.unexpected(t, op, a);
    t.mustNotCommit ??= `${op} answered ${code}`;
    then();
  }

  /** The other service: join with the token, do its part, end its branch (ok:false if its part failed, like join()). */
  private joinSide(t: TxnRecord, token: string, node: string, amount: number, readOnly: boolean, done: (ok: boolean) => void): void {
    const conn = this.sim.openConn(node);
    if (this.sim.rng.chance(0.4)) return this.carriedJoin(t, conn, token, node, amount, readOnly, done);
    this.call(t, conn, { op: "join", token }, (a) => {
      if (t.abandoned) return;
      if (!isOk(a)) return done(false);
      const branch = a.branch as string;
      t.branches.set(branch, { node, joined: true, wrote: false });
      this.transfer(t, conn, branch, node, amount, readOnly, (r) => {
        if (r === "lost") return done(false);
        const fine = r === "ok" && !this.fault(0.05);
        const writes = fine ? t.branches.get(branch)?.writes : undefined;
        this.call(t, conn, { op: "end", name: t.name, branch, ok: fine, reason: fine ? undefined : "the joined service failed", writes }, (e) => {
          if (t.abandoned) return;
          if (isLost(e)) return done(false);
          if (!isOk(e)) return this.refused(t, "end", e, () => done(false));
          if (!fine) t.mustNotCommit ??= "a joined branch ended with ok:false";
          done(fine);
        });
      });
    });
  }

  /**
   * The other service's callback only writes (a receipt, or nothing when it only reads): as the client
   * library does, it sends no join; its end carries the token and joins first.
   */
  private carriedJoin(t: TxnRecord, conn: Conn, token: string, node: string, amount: number, readOnly: boolean, done: (ok: boolean) => void): void {
    const branch = `${node}.cj${++this.carriedJoins}`;
    const fine = !this.fault(0.05);
    const key = `rcpt/${t.name}/${branch}`;
    const writes: [string, unknown, boolean][] | undefined = fine && !readOnly ? [[key, amount, false]] : undefined;
    const reason = fine ? undefined : "the joined service failed";
    this.call(t, conn, { op: "end", name: t.name, branch, join: token, ok: fine, reason, writes }, (e) => {
      if (t.abandoned) return;
      if (isLost(e)) return done(false); // it may or may not have joined: its receipt is not checked
      if (!isOk(e)) {
        // Refused as a join (the transaction moved on, or is gone): the receipt must never appear.
        if (writes) t.receipts.push({ node, key, value: amount, absent: true });
        return done(false);
      }
      t.branches.set(branch, { node, joined: true, wrote: !!writes, writes });
      if (writes) t.receipts.push({ node, key, value: amount });
      if (!fine) t.mustNotCommit ??= "a joined branch ended with ok:false";
      done(fine);
    });
  }

  /** The callback threw: roll back the active transaction, as beginDistributed does. */
  private rollbackActive(t: TxnRecord, conn: Conn): void {
    this.call(t, conn, { op: "rollback", name: t.name, branch: t.ownBranch, reason: "the callback threw" }, (a) => {
      if (isOk(a)) t.mustNotCommit ??= "its rollback was acknowledged";
      this.finish(t);
    });
  }

  private prepare(t: TxnRecord, conn: Conn): void {
    if (this.fault(this.sim.faults.abandonP)) return this.abandon(t);
    const own = [...t.branches.values()].find((b) => !b.joined);
    this.call(t, conn, { op: "prepare", name: t.name, branch: t.ownBranch, writes: own?.writes, begin: t.carriedBegin }, (a) => {
      if (isLost(a)) return this.resolveLater(t);
      if (isOk(a)) {
        t.prepareAck = true;
        return this.sim.later(this.sim.rng.int(300), () => this.decide(t));
      }
      if (refusal.has(errorCode(a)!)) {
        t.mustNotCommit ??= `prepare answered ${errorCode(a)}`;
        return this.finish(t);
      }
      this.unexpected(t, "prepare", a);
    });
    // Cut off mid-prepare: the client learns nothing and must ask status.
    if (this.fault(this.sim.faults.disconnectP)) this.sim.disconnect(conn);
  }

  /** Commit or roll back a prepared transaction; the same choice on every retry. */
  private decide(t: TxnRecord): void {
    t.intended ??= this.sim.rng.chance(0.75) ? "commit" : "rollback";
    const op = t.intended;
    if (op === "commit") t.commitSent = true;
    const conn = this.sim.openConn(t.coordinator);
    this.call(t, conn, { op, name: t.name }, (a) => {
      if (isLost(a)) return this.resolveLater(t);
      if (isOk(a)) {
        if (op === "commit") {
          t.commitAck = true;
          this.sim.checker.commitAnswered(t.name, t.coordinator, a.pending);
        } else t.mustNotCommit ??= "its rollback was acknowledged";
        return this.finish(t);
      }
      const code = errorCode(a)!;
      if (op === "commit" && code === ErrorCode.TRANSACTION_ABORTED) {
        t.mustNotCommit ??= "commit answered TRANSACTION_ABORTED";
        return this.finish(t);
      }
      this.unexpected(t, op, a);
    });
    if (this.fault(this.sim.faults.disconnectP)) this.sim.disconnect(conn);
  }

  /** The outcome is unknown to the client: ask status until it can finish the job. */
  private resolveLater(t: TxnRecord): void {
    this.sim.later(this.sim.rng.range(50, 400), () => {
      const conn = this.sim.openConn(t.coordinator);
      this.call(t, conn, { op: "status", name: t.name }, (a) => {
        if (isLost(a)) return this.resolveLater(t);
        if (!isOk(a)) {
          if (errorCode(a) !== ErrorCode.NOT_FOUND) return this.unexpected(t, "status", a);
          t.mustNotCommit ??= "status: its coordinator knows no such transaction";
          return this.finish(t);
        }
        const state = a.state as string;
        this.sim.checker.statusAnswered(t.name, t.coordinator, state);
        if (state === "prepared") return this.decide(t);
        if (state === "committed") return this.finish(t);
        if (state === "rolled_back") {
          t.mustNotCommit ??= "status answered rolled_back";
          return this.finish(t);
        }
        this.resolveLater(t);
      });
    });
  }
}
