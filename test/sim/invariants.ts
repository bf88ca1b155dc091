// The invariants of DESIGN §8 (1–6, 8), checked by the simulator.
//
// Two kinds of check: per step (what a step logs must be justified by durable
// facts at that moment), and over durable state (what each node's MemoryWal
// has made durable, and what clients were told). The facts checkDurable reads
// about a transaction change only when a flush makes its records durable, a
// branch logs its end, or its client gets an answer; each of these touches the
// transaction, and after every event the touched ones are checked, which is
// the same as checking every transaction after every event.
import type { TxnState } from "../../src/protocol/messages.ts";
import type { Effect, Input } from "../../src/txn/types.ts";
import type { BranchSummary, CoordinatorSummary, LogRecord, Outcome } from "../../src/wal/records.ts";
import type { Sim, SimNode } from "./simulator.ts";
import { describeInput } from "./trace.ts";

export class Violation extends Error {
  constructor(
    readonly invariant: string,
    readonly seed: number,
    readonly event: number,
    readonly at: number,
    readonly detail: string,
    readonly replay: string,
  ) {
    super(`seed ${seed}: invariant ${invariant} violated at event #${event} (t=${at} ms): ${detail}\n  replay: ${replay}`);
  }
}

const rankOf: Record<string, number> = { active: 1, preparing: 1, prepared: 2, committing: 3, rolling_back: 3, committed: 4, rolled_back: 4 };

function outcomeOf(state: TxnState | BranchSummary["state"] | undefined): Outcome | undefined {
  if (state === "committing" || state === "committed") return "commit";
  if (state === "rolling_back" || state === "rolled_back") return "rollback";
  return undefined;
}

export class Checker {
  /** Every branch that ever logged a prepared record, per transaction, with its node. */
  private readonly branchesOf = new Map<string, Map<string, string>>();
  /**
   * The outcome each branch logged (p.end), durable or not: a branch decides once. Only an end a branch on
   * its coordinator's own sidecar logged, and a crash lost before it was durable, is forgotten: such a branch
   * handles a decision before it is durable (as the runtime does), and the crash took the decision too.
   */
  private readonly applied = new Map<string, Outcome>();
  /** Per transaction, the branches that logged commit and those that logged rollback. */
  private readonly appliedByTxn = new Map<string, Record<Outcome, Set<string>>>();
  /** The furthest durable coordinator state seen, and its decision once durable. */
  private readonly coordSeen = new Map<string, { rank: number; outcome?: Outcome }>();
  /** Durable branch records seen, and their outcome once durable. */
  private readonly branchSeen = new Map<string, { outcome?: Outcome }>();
  /** Transactions whose facts changed since the last check (a flush, a logged end, a client answer). */
  private readonly touched = new Set<string>();

  constructor(private readonly sim: Sim) {}

  fail(invariant: string, detail: string): void {
    if (this.sim.opts.ignore?.includes(invariant)) return;
    throw this.sim.violation(invariant, detail);
  }

  durableCoordinator(node: string, name: string): CoordinatorSummary | undefined {
    return this.sim.node(node).wal.durableSummaries().get(`c/${name}`) as CoordinatorSummary | undefined;
  }

  durableBranch(node: string, name: string, branch: string): BranchSummary | undefined {
    return this.sim.node(node).wal.durableSummaries().get(`p/${name}/${branch}`) as BranchSummary | undefined;
  }

  /**
   * What counts as durable for a record node `sn` is about to log: another node's durable state, or, on `sn`
   * itself, anything already in its log, because the log makes records durable in order (a branch on the
   * coordinator's own sidecar handles the decision at once, as the runtime does, and its end follows it).
   */
  private loggedBefore(sn: SimNode, node: string): { coordinator(name: string): CoordinatorSummary | undefined; branch(name: string, branch: string): BranchSummary | undefined } {
    if (node === sn.id) return sn.wal;
    return { coordinator: (name) => this.durableCoordinator(node, name), branch: (name, branch) => this.durableBranch(node, name, branch) };
  }

  /** A crash lost `lost`, the unflushed tail of sn's log. */
  onCrash(sn: SimNode, lost: LogRecord[]): void {
    for (const rec of lost) {
      if (rec.r !== "p.end" || rec.coordinator !== sn.id) continue;
      this.applied.delete(`${rec.name}/${rec.branch}`);
      this.appliedByTxn.get(rec.name)?.[rec.outcome].delete(rec.branch);
    }
  }

  /** The facts about this transaction may have changed: check it after this event. */
  touch(name: string): void {
    this.touched.add(name);
  }

  // ---- per step ------------------------------------------------------------

  onStep(sn: SimNode, input: Input, effects: Effect[]): void {
    for (const e of effects) {
      if (e.k !== "persist") continue;
      const rec = e.rec;
      if (rec.r === "p.prepared") this.noteBranch(rec.name, rec.branch, sn.id);
      else if (rec.r === "p.end") this.onBranchEnd(sn, input, rec);
      else if ((rec.r === "c.decision" || rec.r === "c.end") && rec.outcome === "commit") this.onCommitDecision(sn, rec);
    }
  }

  private noteBranch(name: string, branch: string, node: string): void {
    let m = this.branchesOf.get(name);
    if (!m) this.branchesOf.set(name, (m = new Map()));
    m.set(branch, node);
  }

  private onBranchEnd(sn: SimNode, input: Input, rec: Extract<LogRecord, { r: "p.end" }>): void {
    const where = `branch ${rec.branch} of ${rec.name} on ${sn.id}`;
    // 5: a branch that voted yes (its prepared record is in the log) ends only on its coordinator's decision.
    const votedYes = sn.wal.branch(rec.name, rec.branch)?.state === "prepared";
    const m = input.k === "peer" && input.msg.t === "decision" ? input.msg : undefined;
    if (votedYes && (!m || m.name !== rec.name || m.branch !== rec.branch || m.outcome !== rec.outcome || m.from !== rec.coordinator)) {
      this.fail("5", `${where} logged ${rec.outcome} while handling ${describeInput(input)}: a branch that voted yes decided without its coordinator ${rec.coordinator}`);
    }
    // 4: a branch's outcome never changes, not even across a crash that lost its end record.
    const key = `${rec.name}/${rec.branch}`;
    const before = this.applied.get(key);
    if (before && before !== rec.outcome) this.fail("4", `${where} logged ${before} earlier and ${rec.outcome} now`);
    this.applied.set(key, rec.outcome);
    // 1: no transaction has a committed and a rolled-back branch.
    let seen = this.appliedByTxn.get(rec.name);
    if (!seen) this.appliedByTxn.set(rec.name, (seen = { commit: new Set(), rollback: new Set() }));
    const opposite: Outcome = rec.outcome === "commit" ? "rollback" : "commit";
    const other = [...seen[opposite]].find((b) => b !== rec.branch);
    if (other !== undefined) this.fail("1", `${rec.name}: ${where} logged ${rec.outcome} but branch ${other} logged ${opposite}`);
    seen[rec.outcome].add(rec.branch);
    this.touch(rec.name);
    // 2: a branch commits only after its coordinator's commit decision is durable.
    if (rec.outcome === "commit") {
      const cs = this.loggedBefore(sn, rec.coordinator).coordinator(rec.name);
      if (outcomeOf(cs?.state) !== "commit") {
        this.fail("2", `${where} commits while coordinator ${rec.coordinator}'s durable log holds ${cs?.state ?? "nothing"} for ${rec.name}`);
      }
    }
  }

  /** 3: a coordinator decides commit only after every branch voted yes durably. */
  private onCommitDecision(sn: SimNode, rec: Extract<LogRecord, { r: "c.decision" | "c.end" }>): void {
    const t = this.sim.bank.txn(rec.name);
    for (const ref of rec.branches) {
      if (ref.readonly) {
        if (t?.branches.get(ref.id)?.wrote) this.fail("3", `${sn.id} commits ${rec.name} counting branch ${ref.id} as read-only, but its client wrote in it`);
        continue;
      }
      const bs = this.loggedBefore(sn, ref.sidecar).branch(rec.name, ref.id);
      if (bs?.state !== "prepared" && bs?.state !== "committed") {
        this.fail("3", `${sn.id} logs commit (${rec.r}) for ${rec.name} but branch ${ref.id} on ${ref.sidecar} has ${bs?.state ?? "no"} durable record`);
      }
    }
    for (const id of t?.branches.keys() ?? []) {
      if (!rec.branches.some((r) => r.id === id)) {
        this.fail("3", `${sn.id} logs commit for ${rec.name} without branch ${id}, which its client was told is part of it`);
      }
    }
  }

  // ---- durable state and acknowledgements ----------------------------------

  checkDurable(): void {
    for (const name of this.touched) {
      const t = this.sim.bank.txn(name);
      if (!t) {
        this.sim.sagaChecker.checkDurable(name);
        continue;
      }
      const cs = this.durableCoordinator(t.coordinator, t.name);
      const rank = cs ? rankOf[cs.state] : 0;
      const outcome = outcomeOf(cs?.state);
      // 4: durable coordinator state only moves forward, and a durable decision never changes.
      const seen = this.coordSeen.get(t.name);
      if (seen && rank < seen.rank) this.fail("4", `${t.name}: coordinator ${t.coordinator}'s durable state went back to ${cs?.state ?? "nothing"}`);
      if (seen?.outcome && outcome !== seen.outcome) this.fail("4", `${t.name}: durable decision changed from ${seen.outcome} to ${outcome ?? "none"}`);
      if (rank) this.coordSeen.set(t.name, { rank, outcome: outcome ?? seen?.outcome });

      for (const [branch, node] of this.branchesOf.get(t.name) ?? []) {
        const bs = this.durableBranch(node, t.name, branch);
        const key = `${t.name}/${branch}`;
        const before = this.branchSeen.get(key);
        const bo = outcomeOf(bs?.state);
        if (before && !bs) this.fail("4", `${t.name}: durable prepared record of branch ${branch} on ${node} was lost`);
        if (before?.outcome && bo !== before.outcome) this.fail("4", `${t.name}: branch ${branch} on ${node} durably ${before.outcome} before, ${bo ?? "undecided"} now`);
        if (bs) this.branchSeen.set(key, { outcome: bo ?? before?.outcome });
        // 2, over durable state.
        if (bo === "commit" && outcome !== "commit") this.fail("2", `${t.name}: branch ${branch} on ${node} is durably committed while the coordinator's durable log holds ${cs?.state ?? "nothing"}`);
      }
      // 3, over durable state.
      if (outcome === "commit") {
        for (const ref of cs!.branches) {
          const bs = ref.readonly ? undefined : this.durableBranch(ref.sidecar, t.name, ref.id);
          if (!ref.readonly && bs?.state !== "prepared" && bs?.state !== "committed") {
            this.fail("3", `${t.name} is durably committing but branch ${ref.id} on ${ref.sidecar} has ${bs?.state ?? "no"} durable record`);
          }
        }
      }
      // 6: what clients were told stays true.
      if (t.prepareAck && rank < 2) this.fail("6", `${t.name}: prepare was acknowledged, but coordinator ${t.coordinator}'s durable log holds ${cs?.state ?? "nothing"}`);
      if (t.commitAck && outcome !== "commit") this.fail("6", `${t.name}: commit was acknowledged, but coordinator ${t.coordinator}'s durable log holds ${cs?.state ?? "nothing"}`);
      if (t.mustNotCommit && (outcome === "commit" || this.appliedByTxn.get(t.name)?.commit.size)) {
        this.fail("6", `${t.name}: ${t.mustNotCommit}, yet it commits`);
      }
      for (const [id, b] of t.branches) {
        if (b.joined && !cs?.branches.some((r) => r.id === id)) {
          this.fail("6", `${t.name}: the join of branch ${id} on ${b.node} was acknowledged, but coordinator ${t.coordinator} has no durable record of the branch`);
        }
      }
    }
    this.touched.clear();
  }

  /** A status answer must agree with the coordinator's durable log. */
  statusAnswered(name: string, coordinator: string, state: string): void {
    const cs = this.durableCoordinator(coordinator, name);
    const durable = outcomeOf(cs?.state);
    const agrees =
      state === "committing" || state === "committed"
        ? durable === "commit"
        : state === "rolling_back" || state === "rolled_back"
          ? durable !== "commit"
          : state === "prepared"
            ? (cs ? rankOf[cs.state] : 0) >= 2
            : true;
    if (!agrees) this.fail("6", `status of ${name} answered ${state}, but coordinator ${coordinator}'s durable log holds ${cs?.state ?? "nothing"}`);
  }

  /** A commit answered with nothing pending: every branch has acknowledged, so each has durably committed. */
  commitAnswered(name: string, coordinator: string, pending: unknown): void {
    if (!Array.isArray(pending) || pending.length) return;
    const cs = this.durableCoordinator(coordinator, name);
    for (const ref of cs?.branches ?? []) {
      const bs = ref.readonly ? undefined : this.durableBranch(ref.sidecar, name, ref.id);
      if (!ref.readonly && bs?.state !== "committed") {
        this.fail("6", `commit of ${name} was answered with nothing pending, but branch ${ref.id} on ${ref.sidecar} is durably ${bs?.state ?? "nothing"}`);
      }
    }
  }

  /** A read outside any transaction must only show durable data. */
  readAnswered(sn: SimNode, version: number): void {
    if (sn.durableKvVersion < version) {
      this.fail("6", `a read on ${sn.id} was answered with store version ${version} while only version ${sn.durableKvVersion} is durable`);
    }
  }

  // ---- after the faults stop -----------------------------------------------

  /** Everything is final: each transaction's branches agree with its decision, and the store holds exactly the committed transfers. */
  finalCheck(): void {
    this.sim.sagaChecker.finalCheck();
    const expected = new Map<string, number>();
    for (const t of this.sim.bank.txns) {
      const cs = this.durableCoordinator(t.coordinator, t.name);
      const committed = cs?.state === "committed";
      if (t.commitAck && !committed) this.fail("6", `${t.name}: commit was acknowledged but it ended ${cs?.state ?? "forgotten"}`);
      if (t.mustNotCommit && committed) this.fail("6", `${t.name}: ${t.mustNotCommit}, yet it committed`);
      if (committed && !t.commitSent) this.fail("6", `${t.name} committed though its client never asked to commit`);
      if (committed) {
        for (const ref of cs!.branches) {
          const bs = ref.readonly ? undefined : this.durableBranch(ref.sidecar, t.name, ref.id);
          if (!ref.readonly && bs?.state !== "committed") this.fail("1", `${t.name} committed, but branch ${ref.id} on ${ref.sidecar} ended ${bs?.state ?? "forgotten"}`);
        }
        for (const [k, d] of t.deltas) expected.set(k, (expected.get(k) ?? 0) + d);
      }
      for (const r of t.receipts) {
        const got = this.sim.node(r.node).wal.kvGet(r.key)?.value;
        if (got !== (committed && !r.absent ? r.value : undefined)) this.fail("6", `${t.name} ended ${cs?.state ?? "forgotten"}, but its receipt ${r.key} on ${r.node} is ${got}`);
      }
      if (!committed) {
        for (const [branch, node] of this.branchesOf.get(t.name) ?? []) {
          if (this.durableBranch(node, t.name, branch)?.state === "committed") this.fail("1", `${t.name} ended ${cs?.state ?? "forgotten"}, but branch ${branch} on ${node} committed`);
        }
      }
    }
    for (const a of this.sim.bank.accounts) {
      const got = (this.sim.node(a.node).wal.kvGet(a.key)?.value as number | undefined) ?? 0;
      const want = expected.get(`${a.node} ${a.key}`) ?? 0;
      if (got !== want) this.fail("6", `store of ${a.node}: ${a.key} is ${got}, but the committed transfers add up to ${want}`);
    }
  }
}
