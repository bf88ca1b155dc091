// One sidecar's transaction engine as a deterministic state machine.
// step(input) -> effects; no I/O, no clock, no randomness (DESIGN §2).
// The same Node runs inside the sidecar runtime and inside the simulator.
//
// Roles: for every transaction this node coordinates there is a Coord; for
// every branch of any transaction that lives on this node there is a Branch.
// A coordinator talks to its branches only by messages, also to the branch on
// its own node, so a single sidecar and a federation run the same code.
import { ErrorCode, type WireError, wireError } from "../protocol/errors.ts";
import type { PeerMessage, TxnState } from "../protocol/messages.ts";
import { type ContextToken, contextToken, decodeToken } from "../protocol/token.ts";
import { limits, timing } from "../limits.ts";
import { LockTable, staleRead } from "../store/locks.ts";
import { formatGid, localBranchCharsMax, type SqlKind } from "../protocol/sql-branch.ts";
import type { BranchRef, BranchSummary, CoordinatorSummary, LogRecord, Outcome, Protocol, SqlResourceRef, Write } from "../wal/records.ts";
import { isTerminal } from "../wal/records.ts";
import type { OrchestrationSummary } from "../wal/orchestration-records.ts";
import type { WalReader } from "../wal/wal.ts";
import { Orchestrator } from "./orchestrator.ts";
import { selectProtocol } from "./select.ts";
import type { Branch, BranchState, Coord, CoordBranch, Vote } from "./state.ts";
import type { ClientInput, Effect, Input, ReplyBody, ReplyTo } from "./types.ts";
import { branchViews, coordStatus, newestView, type StatusView, summaryStatus } from "./views.ts";

export interface NodeOptions {
  id: string;
  /** Distinguishes branch ids across restarts of the same node; chosen by the runtime. */
  bootId: string;
  reader: WalReader;
  /** How long commit waits for acks before answering with the unacknowledged branches as pending (default timing.ackWaitMs). */
  ackWaitMs?: number;
  /** Finished transactions stay in memory this long before status reads them from the log (default timing.evictAfterMs). */
  evictAfterMs?: number;
  /** The runtime's seeded PRNG (retry jitter). */
  random?: () => number;
  /** Configured peer sidecars: asked who coordinates a name this node does not know. */
  peers?: string[];
  /** SQL databases configured on this sidecar (--db name=url), for tx.sql(name). */
  databases?: ReadonlyMap<string, { kind: SqlKind; url: string }>;
}

const bkey = (name: string, branch: string) => `${name}/${branch}`;
/** The part after "<sidecar>." of a branch id a client chose: no dot, so never one this node makes (<boot>.<seq>). */
const clientBranchLocal = /^[A-Za-z0-9_-]+$/;
/** The ReplyTo connection of a request another sidecar forwarded here. */
const FORWARDED = -1;

/** A reply sent before the one rule would send it: see Effect "reply" in types.ts. */
type Release = "unlogged" | "immediate";
/** Evicted entries at the head of `retired` before its array is compacted (and only once they are over half of it). */
const retiredCompactMin = 1024;
const hourMs = 3_600_000;

export class Node {
  readonly id: string;
  readonly coords = new Map<string, Coord>();
  readonly branches = new Map<string, Branch>();
  // The tick looks only at unfinished work; finished entries wait in `retired`
  // (oldest first) until evictAfterMs, so a tick costs what is in flight, not
  // what finished in the last second.
  private readonly liveCoords = new Set<Coord>();
  private readonly liveBranches = new Set<Branch>();
  private readonly retired: { at: number; coord?: Coord; branch?: Branch }[] = [];
  /** Every branch in memory, by transaction name: names held, status, forwarding. */
  private readonly byName = new Map<string, Branch[]>();
  private retiredHead = 0;
  readonly locks = new LockTable();
  private readonly reader: WalReader;
  private readonly bootId: string;
  private seq = 0;
  private kvVersion: number;
  private readonly ackWaitMs: number;
  private readonly evictAfterMs: number;
  private out: Effect[] = [];
  private readonly databases: ReadonlyMap<string, { kind: SqlKind; url: string }>;
  readonly orchestrator: Orchestrator;
  private readonly traces = new Map<string, string>();
  private readonly peers: string[];
  /** Decisions asked of this node by another sidecar's client, waiting for their answer. */
  private readonly forwardedIn = new Map<number, { peer: string; req: string; name: string }>();
  /** Decisions this node's clients asked of other sidecars. */
  private readonly forwardedOut = new Map<string, { to: ReplyTo; name: string; asked: number; notFound: number; deadline: number }>();
  private forwardSeq = 0;
  /**
   * Enlists for a name with no transaction here yet, by name, oldest first. The client sends begin
   * before it hands out the token, but the token's enlist can still be read first (another socket,
   * same turn): held here, it is answered when the begin arrives, not refused and asked again.
   */
  private readonly parkedEnlists = new Map<string, { msg: Extract<PeerMessage, { t: "enlist" }>; at: number }[]>();
  private parkedCount = 0;

  constructor(opts: NodeOptions) {
    this.id = opts.id;
    this.bootId = opts.bootId;
    this.reader = opts.reader;
    this.kvVersion = opts.reader.kvVersion();
    this.ackWaitMs = opts.ackWaitMs ?? timing.ackWaitMs;
    // Finished transactions leave memory soon: status and commit answer from the log.
    this.evictAfterMs = opts.evictAfterMs ?? timing.evictAfterMs;
    this.databases = opts.databases ?? new Map();
    this.peers = opts.peers ?? [];
    const random = opts.random ?? (() => 0.5);
    this.orchestrator = new Orchestrator(
      {
        reader: this.reader,
        locks: this.locks,
        persist: (rec) => this.persist(rec),
        ok: (to, result) => this.ok(to, result),
        fail: (to, error) => this.fail(to, error),
        call: (call) => this.out.push({ k: "call", call }),
        random,
        nextVersion: () => ++this.kvVersion,
      },
      this.id,
    );
  }

  step(input: Input): Effect[] {
    this.out = [];
    switch (input.k) {
      case "client":
        this.onClient(input.req, input.from, input.now);
        break;
      case "peer":
        this.onPeer(input.msg, input.now);
        break;
      case "tick":
        this.onTick(input.now);
        break;
      case "disconnect":
        this.onDisconnect(input.conn, input.now);
        break;
      case "recover":
        this.onRecover(input.coordinators, input.branches, input.now, input.orchestrations);
        break;
      case "applied":
        this.onApplied(input.name, input.branch);
        break;
      case "sql_finished":
        this.onSqlFinished(input.name, input.branch, input.ok);
        break;
      case "call_result":
        this.orchestrator.onResult(input, input.now);
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${JSON.stringify(never)}`);
      }
    }
    return this.out;
  }

  // ---- effects -------------------------------------------------------------

  private persist(rec: LogRecord) {
    this.out.push({ k: "persist", rec });
  }
  private persistLazy(rec: LogRecord) {
    this.out.push({ k: "persist", rec, lazy: true });
  }
  private send(to: string, msg: PeerMessage) {
    const tp = this.traces.get(msg.name);
    this.out.push({ k: "send", to, msg: tp && !msg.traceparent ? { ...msg, traceparent: tp } : msg });
  }

  /** The W3C traceparent a transaction was begun (or joined) with, for messages and log lines. */
  traceOf(name: string): string | undefined {
    return this.traces.get(name);
  }
  private ok(to: ReplyTo, result: Record<string, unknown> = {}, release?: Release) {
    this.reply(to, { ok: true, ...result } as ReplyBody, release);
  }
  private fail(to: ReplyTo, error: WireError, release?: Release) {
    this.reply(to, { ok: false, error }, release);
  }
  /** `release`: sent sooner than the rule says (see Effect "reply"); the default waits for everything logged so far. */
  private reply(to: ReplyTo, body: ReplyBody, release?: Release) {
    if (to.conn !== FORWARDED) return void this.out.push(release ? { k: "reply", to, body, [release]: true } : { k: "reply", to, body });
    // The answer to another sidecar's client goes back over the federation.
    const f = this.forwardedIn.get(to.id);
    if (!f) return;
    this.forwardedIn.delete(to.id);
    this.send(f.peer, { t: "decided", name: f.name, req: f.req, from: this.id, body });
  }

  // ---- client requests -----------------------------------------------------

  private onClient(req: ClientInput, from: ReplyTo, now: number) {
    switch (req.op) {
      case "begin": {
        const c = this.begin(req, from, now);
        // Nothing here was logged, nor depends on what an earlier step logged and has not made durable yet (the
        // name check reads memory; a crash forgets this transaction either way): the reply need not wait for the
        // previous transaction's last records, which would add a sync to every begin at low load.
        if (c) this.ok(from, { name: c.name, branch: c.ownBranch, context: contextToken(c.name, this.id, c.ownBranch!, c.timeoutMs, c.traceparent), protocol: c.protocol }, "immediate");
        return;
      }
      case "join":
        return void this.join(decodeToken(req.token), from, now, req.branch);
      case "get":
        return this.get(req, from);
      case "put":
      case "delete":
        return this.write(req, from);
      case "prepare":
        return this.prepare(req, from, now);
      case "end":
        return this.end(req, from, now);
      case "commit":
        return this.decide(req.name, "commit", from, now);
      case "rollback":
        return this.decide(req.name, "rollback", from, now, req.reason, req.branch);
      case "status":
        return this.status(req.name, from);
      case "sql_open":
        return this.sqlOpen(req, from, now);
      case "sql_prepared":
        return this.sqlPrepared(req, from);
      case "list":
        return this.ok(from, { transactions: this.list(req.state, req.limit) });
      case "o_create": {
        const held = this.nameHeld(req.name);
        if (held) return this.fail(from, this.nameInUse(held));
        // The seed's requirements (timeout in seconds) and the flat options are one thing inside (the schema refuses both).
        const { requirements: r, ...flat } = req;
        const timeoutMs = r?.timeout === undefined ? undefined : Math.round(r.timeout * 1000);
        return this.orchestrator.create(r ? { ...flat, consistency: r.consistency, availability: r.availability, timeoutMs } : flat, from, now);
      }
      case "o_add":
        return this.orchestrator.add(req.name, req.participant, from);
      case "o_execute":
        return this.orchestrator.execute(req.name, from, now);
      case "o_abort":
        return this.orchestrator.abort(req.name, from, now, req.reason);
      case "recover":
        return this.ok(from, { resumed: this.orchestrator.kick(now) });
      case "resolve":
        if (this.orchestrator.resolve(req.name, req.outcome, from, now)) return;
        return this.decide(req.name, req.outcome, from, now, "resolved by an operator");
      default: {
        const never: never = req;
        throw new Error(`unknown op ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * What holds `name` on this node, if anything: an unfinished transaction of that name (plain or
   * orchestrated, `failed` included) or an unfinished branch of one (in doubt, say). One namespace for
   * both faces, so `status`, `list` and `resolve` can never mean two things. `joining`: the incarnation a
   * join names; that transaction itself is no clash (null: a token without one clashes only with the others).
   */
  private nameHeld(name: string, joining?: string | null): string | undefined {
    const c = this.coords.get(name);
    if (c && !isTerminal(c.state) && (joining === undefined || (joining !== null && c.ownBranch !== joining))) return `transaction "${name}" is ${c.state} on sidecar ${this.id}`;
    if (this.orchestrator.active(name)) return `orchestrated transaction "${name}" is not finished on sidecar ${this.id}`;
    for (const b of this.byName.get(name) ?? []) {
      // A joining branch is in no transaction yet (its enlist may still be refused): it holds nothing.
      if (b.state === "committed" || b.state === "rolled_back" || b.state === "joining") continue;
      if (joining !== undefined && (joining === null || b.incarnation === undefined || b.incarnation === joining)) continue;
      return `sidecar ${this.id} holds an unfinished (${branchStateName(b.state)}) branch of another transaction "${name}", coordinated by ${b.coordinator}`;
    }
    return undefined;
  }

  private nameInUse(held: string): WireError {
    return wireError(ErrorCode.NAME_IN_USE, `${held}; a name is unique while its transaction is not finished (failed ones until resolved)`);
  }

  /** Open a transaction and its own branch; on a refusal, answer `from` and return undefined. `branch`: an id the client chose. */
  private begin(req: Omit<Extract<ClientInput, { op: "begin" }>, "id" | "op">, from: ReplyTo, now: number): Coord | undefined {
    // Every unfinished transaction and branch is in memory (recovery loads them), so memory answers NAME_IN_USE.
    const held = this.nameHeld(req.name);
    if (held) return void this.fail(from, this.nameInUse(held));
    if (this.coords.size >= limits.inflightTxnsMax) {
      return void this.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, `more than inflightTxnsMax (${limits.inflightTxnsMax}) transactions in flight; retry later`));
    }
    const chosen = selectProtocol(req.protocol ?? "2pc", { consistency: req.consistency, availability: req.availability }, []);
    if (!chosen.ok) return void this.fail(from, chosen.error);
    if (chosen.protocol !== "2pc") {
      return void this.fail(from, wireError(ErrorCode.PROTOCOL_UNSUPPORTED, "beginDistributed runs 2PC; use createTransaction for Sagas"));
    }
    const badBranch = this.clientBranchError(req.name, req.branch);
    if (badBranch) return void this.fail(from, badBranch);
    const timeoutMs = req.timeoutMs ?? timing.defaultTimeoutMs;
    const branchId = req.branch ?? this.newBranchId();
    const c: Coord = {
      name: req.name,
      protocol: "2pc",
      state: "active",
      branches: new Map([[branchId, { id: branchId, sidecar: this.id, acked: false }]]),
      createdAt: now,
      deadline: now + timeoutMs,
      timeoutMs,
      preparedTimeoutMs: req.preparedTimeoutMs,
      traceparent: req.traceparent,
      owner: from.conn,
      ownBranch: branchId,
      durablePrepared: false,
      decideWaiters: [],
      lastResend: now,
    };
    this.addCoord(c);
    const own = this.newBranch(req.name, branchId, this.id, "active", from.conn, now + timeoutMs, now, req.traceparent);
    own.incarnation = branchId; // what its context token names
    this.addBranch(own);
    if (req.traceparent) this.traces.set(req.name, req.traceparent);
    const parked = this.parkedEnlists.get(req.name);
    if (parked) {
      this.parkedEnlists.delete(req.name);
      this.parkedCount -= parked.length;
      for (const p of parked) this.onEnlist(p.msg, now);
    }
    return c;
  }

  /** A branch id a client chose (begin, join): this sidecar's id, a dot, a short local part; not yet used by the name. */
  private clientBranchError(name: string, branch: string | undefined): WireError | undefined {
    if (branch === undefined) return undefined;
    const local = branch.startsWith(this.id) && branch[this.id.length] === "." ? branch.slice(this.id.length + 1) : "";
    if (!clientBranchLocal.test(local) || local.length > localBranchCharsMax) {
      return wireError(ErrorCode.BAD_REQUEST, `branch: must be "${this.id}." and 1 to ${localBranchCharsMax} of [A-Za-z0-9_-]`);
    }
    if (this.branches.has(bkey(name, branch))) return wireError(ErrorCode.BAD_REQUEST, `branch: ${branch} is already a branch of "${name}" here; choose a fresh id`);
    return undefined;
  }

  /** Enlist a new branch with the token's coordinator; `from` is answered once it is (or is refused). */
  private join(t: ContextToken | undefined, from: ReplyTo, now: number, branch?: string): Branch | undefined {
    if (!t) return void this.fail(from, wireError(ErrorCode.BAD_REQUEST, "token: not a dtx context token (pass tx.context unchanged)"));
    const badBranch = this.clientBranchError(t.name, branch);
    if (badBranch) return void this.fail(from, badBranch);
    const held = this.nameHeld(t.name, t.incarnation ?? null);
    if (held) return void this.fail(from, this.nameInUse(held));
    const branchId = branch ?? this.newBranchId();
    const b = this.newBranch(t.name, branchId, t.coordinator, "joining", from.conn, now + (t.timeoutMs ?? timing.defaultTimeoutMs), now, t.traceparent);
    b.joinWaiter = from;
    b.joinedAt = now;
    this.addBranch(b);
    b.incarnation = t.incarnation;
    if (t.traceparent) this.traces.set(t.name, t.traceparent);
    this.sendEnlist(b);
    return b;
  }

  private get(req: Extract<ClientInput, { op: "get" }>, from: ReplyTo) {
    if (req.name === undefined) {
      const e = this.reader.kvGet(req.key);
      return this.ok(from, e ? { found: true, value: e.value } : { found: false });
    }
    const b = this.activeBranch(req.name, req.branch, from);
    if (!b) return;
    const w = b.writes.get(req.key);
    if (w) return this.ok(from, w.deleted ? { found: false } : { found: true, value: w.value });
    const e = this.reader.kvGet(req.key);
    if (!b.reads.has(req.key)) b.reads.set(req.key, e?.version ?? 0);
    this.ok(from, e ? { found: true, value: e.value } : { found: false });
  }

  private write(req: Extract<ClientInput, { op: "put" | "delete" }>, from: ReplyTo) {
    const b = this.activeBranch(req.name, req.branch, from);
    if (!b) return;
    const refused = this.applyWrites(b, [[req.key, req.op === "put" ? req.value : null, req.op === "delete"]]);
    if (refused) return this.fail(from, refused);
    this.ok(from);
  }

  /** Writes into an active branch (one put/delete, or what the client buffered and sent with prepare/end). */
  private applyWrites(b: Branch, writes: [string, unknown, boolean][]): WireError | undefined {
    b.ops += writes.length;
    if (b.ops > limits.opsPerBranchMax) {
      return wireError(ErrorCode.LIMIT_EXCEEDED, `more than opsPerBranchMax (${limits.opsPerBranchMax}) operations in one branch`);
    }
    for (const [key, value, deleted] of writes) b.writes.set(key, deleted ? { value: null, deleted: true } : { value, deleted: false });
    return undefined;
  }

  /** The branch a client names for a read or write, if it may still be used. */
  private activeBranch(name: string, branch: string | undefined, from: ReplyTo): Branch | undefined {
    const b = branch === undefined ? undefined : this.branches.get(bkey(name, branch));
    if (!b) {
      this.fail(from, wireError(ErrorCode.NOT_FOUND, `no branch ${branch ?? "(none given)"} of transaction "${name}" on sidecar ${this.id}`));
      return undefined;
    }
    if (b.state === "active") return b;
    if (b.state === "rolled_back") {
      const c = this.coords.get(name);
      this.fail(from, abortedError(name, c?.reason ?? "the transaction was rolled back", c?.participant));
    } else {
      this.fail(from, wireError(ErrorCode.INVALID_STATE, `branch ${b.id} of "${name}" is ${b.state}; reads and writes are allowed only while it is active`));
    }
    return undefined;
  }

  /**
   * The coordinator's client finished its callback: prepare every branch. With `begin`, the callback never
   * needed the sidecar and the transaction is begun here, as if `elapsedMs` ago (its timeout counts from then).
   */
  private prepare(req: Extract<ClientInput, { op: "prepare" }>, from: ReplyTo, now: number) {
    const { name, writes, branch } = req;
    if (req.begin) {
      const { elapsedMs, ...opts } = req.begin;
      const begun = this.begin({ ...opts, name, branch }, from, now - elapsedMs);
      if (!begun) return;
      if (now >= begun.deadline) {
        this.abort(begun, `timed out after ${begun.timeoutMs} ms before every branch prepared`, undefined, false, now);
        return this.fail(from, abortedError(name, begun.reason));
      }
    }
    const c = this.coords.get(name);
    if (!c || (branch !== undefined && c.ownBranch !== branch)) {
      // Rolled back before its client asked to prepare (a branch voted no when its callback ended) and already
      // forgotten from memory: the log still says why.
      const s = this.reader.coordinator(name);
      if (s?.state === "rolled_back" && (branch === undefined || s.branches.some((b) => b.id === branch))) {
        return this.fail(from, s.conflict ? conflictError(name, s.reason, s.participant) : abortedError(name, s.reason, s.participant));
      }
      const which = branch === undefined ? "" : ` with branch ${branch}`;
      return this.fail(from, wireError(ErrorCode.NOT_FOUND, `no active transaction "${name}"${which} coordinated by sidecar ${this.id}`));
    }
    switch (c.state) {
      case "active":
        break;
      case "prepared":
        if (writes?.length) return this.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is already prepared; it takes no more writes`));
        return this.ok(from, { name, state: "prepared", protocol: c.protocol });
      case "rolling_back":
      case "rolled_back":
        return this.fail(from, c.conflict ? conflictError(name, c.reason, c.participant) : abortedError(name, c.reason, c.participant));
      default:
        return this.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}`));
    }
    if (writes?.length) {
      const own = c.ownBranch === undefined ? undefined : this.branches.get(bkey(name, c.ownBranch));
      const refused = own?.state === "active" ? this.applyWrites(own, writes) : wireError(ErrorCode.INVALID_STATE, `the branch of "${name}" is ${own?.state ?? "gone"}`);
      if (refused) {
        this.abort(c, refused.message, undefined, false, now);
        return this.fail(from, refused);
      }
    }
    c.state = "preparing";
    c.prepareWaiter = from;
    c.lastResend = now;
    // Only begin's own branch: a joined branch on this node is still running until its client ends it.
    const own = c.ownBranch === undefined ? undefined : this.branches.get(bkey(name, c.ownBranch));
    if (own && own.state === "active") own.state = "done";
    this.askVotes(c, false);
  }

  /**
   * Ask the branches that have not voted to prepare. A joined branch prepares
   * and votes by itself when its callback ends, so it is asked only on a
   * resend (its vote may have been lost, or its sidecar restarted). Begin's
   * own branch is asked last, once every other branch voted yes: its prepared
   * record then joins c.prepared in one sync instead of taking one before it.
   */
  private askVotes(c: Coord, resend: boolean) {
    let othersVoted = true;
    for (const b of c.branches.values()) {
      if (b.id === c.ownBranch || b.vote !== undefined) continue;
      othersVoted = false;
      if (resend) this.send(b.sidecar, { t: "prepare", name: c.name, branch: b.id, from: this.id });
    }
    const own = c.ownBranch === undefined ? undefined : c.branches.get(c.ownBranch);
    if (othersVoted && own && own.vote === undefined) this.send(own.sidecar, { t: "prepare", name: c.name, branch: own.id, from: this.id });
  }

  /** Register a database for a branch's SQL work: logged before the service learns the gid (DESIGN §5.3). */
  private sqlOpen(req: Extract<ClientInput, { op: "sql_open" }>, from: ReplyTo, now: number) {
    const b = this.activeBranch(req.name, req.branch, from);
    if (!b) return;
    const db = this.databases.get(req.db);
    if (!db) {
      const known = [...this.databases.keys()].join(", ") || "none";
      return this.fail(from, wireError(ErrorCode.SQL_DB_UNKNOWN, `no database "${req.db}" is configured on sidecar ${this.id} (configured: ${known}); start the sidecar with --db ${req.db}=postgres://… or mysql://…`));
    }
    if (b.resources.some((r) => r.db === req.db)) {
      return this.fail(from, wireError(ErrorCode.SQL_GID_DUPLICATE, `branch ${b.id} of "${b.name}" already has a SQL branch in "${req.db}"; use one tx.sql("${req.db}") handle`));
    }
    if (b.resources.length >= limits.sqlResourcesPerBranchMax) {
      return this.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, `more than sqlResourcesPerBranchMax (${limits.sqlResourcesPerBranchMax}) databases in one branch`));
    }
    const made = formatGid({ sidecar: this.id, branch: b.id, db: req.db, name: b.name }, db.kind);
    if ("error" in made) return this.fail(from, wireError(ErrorCode.LIMIT_EXCEEDED, made.error));
    const resource: SqlResourceRef = { db: req.db, gid: made.gid, kind: db.kind };
    b.resources.push({ ...resource, prepared: false });
    this.persist({ r: "p.resource", name: b.name, branch: b.id, coordinator: b.coordinator, resource, at: now });
    this.ok(from, { ...resource, url: db.url });
  }

  /** The service prepared a branch's SQL work under its gid and closed that connection. */
  private sqlPrepared(req: Extract<ClientInput, { op: "sql_prepared" }>, from: ReplyTo) {
    const b = this.branches.get(bkey(req.name, req.branch));
    const r = b?.resources.find((x) => x.db === req.db);
    if (!b || !r || r.gid !== req.gid) {
      return this.fail(from, wireError(ErrorCode.SQL_GID_UNKNOWN, `sidecar ${this.id} has no SQL branch ${req.gid} in "${req.db}" for branch ${req.branch} of "${req.name}"`));
    }
    r.prepared = true;
    switch (b.state) {
      case "active":
      case "done":
        return this.ok(from);
      case "rolled_back":
        // Rolled back while the service was preparing: finish the now-prepared work as well.
        this.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: [sqlRef(r)], outcome: "rollback" });
        return this.fail(from, abortedError(b.name, this.coords.get(b.name)?.reason));
      default:
        return this.fail(from, wireError(ErrorCode.INVALID_STATE, `branch ${b.id} of "${b.name}" is ${b.state}; SQL branches are reported prepared before the callback's branch prepares`));
    }
  }

  /** A joined branch's callback finished (ok) or threw (not ok). */
  private end(req: Extract<ClientInput, { op: "end" }>, from: ReplyTo, now: number) {
    if (req.join !== undefined) {
      // Join first; the end runs once the coordinator has the branch (onEnlisted), or fails with the join.
      const t = decodeToken(req.join);
      if (t && t.name !== req.name) return this.fail(from, wireError(ErrorCode.BAD_REQUEST, `join: the token names transaction "${t.name}", not "${req.name}"`));
      const joining = this.join(t, from, now, req.branch);
      if (joining) joining.pendingEnd = { ...req, join: undefined };
      return;
    }
    const b = this.branches.get(bkey(req.name, req.branch));
    if (!b) return this.fail(from, wireError(ErrorCode.NOT_FOUND, `no branch ${req.branch} of "${req.name}" on sidecar ${this.id}`));
    if (b.state !== "active") {
      if (b.state === "rolled_back") return this.fail(from, abortedError(req.name, "the transaction was rolled back"));
      return this.fail(from, wireError(ErrorCode.INVALID_STATE, `branch ${b.id} of "${req.name}" is ${b.state}`));
    }
    const refused = req.ok && req.writes?.length ? this.applyWrites(b, req.writes) : undefined;
    if (!req.ok || refused) {
      this.voteNo(b, refused?.message ?? req.reason ?? "the joined callback failed", false, now);
      return refused ? this.fail(from, refused) : this.ok(from);
    }
    b.state = "done";
    // The answer promises only that the callback's work reached the sidecar, not that it is prepared: it need not wait for p.prepared.
    this.ok(from, {}, "unlogged");
    // Prepare now, without waiting to be asked: the yes vote is usually at the coordinator before its client asks it to
    // prepare, so its prepare phase needs no round trip to this sidecar. Presumed abort is unchanged: if the coordinator
    // never records the transaction prepared, this branch asks and rolls back.
    this.prepareBranch(b, now);
  }

  /** `branch`: begin's branch, given by a client rolling back its own transaction; never another one of the same name. */
  private decide(name: string, outcome: Outcome, from: ReplyTo, now: number, reason?: string, branch?: string) {
    const c = this.coords.get(name);
    if (branch !== undefined && c?.ownBranch !== branch) {
      const s = this.reader.coordinator(name);
      if (s?.state === "rolled_back" && s.branches.some((b) => b.id === branch)) return this.replyDecided(from, name, s.state, s.protocol, outcome, s.reason, s.participant);
      return this.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" with branch ${branch} coordinated by sidecar ${this.id}`));
    }
    if (!c) {
      const s = this.reader.coordinator(name);
      if (s && (s.state === "committed" || s.state === "rolled_back")) return this.replyDecided(from, name, s.state, s.protocol, outcome, s.reason, s.participant);
      if (from.conn !== FORWARDED) return this.forwardDecision(name, outcome, from, now);
      return this.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" coordinated by sidecar ${this.id}`));
    }
    switch (c.state) {
      case "active":
      case "preparing":
        if (outcome === "commit") {
          return this.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}; commit it after beginDistributed resolves`));
        }
        c.decideWaiters.push({ to: from, since: now });
        return this.abort(c, reason ?? "rolled back by the client", undefined, false, now);
      case "prepared":
        c.decideWaiters.push({ to: from, since: now });
        if (outcome === "commit") return this.commit(c, now);
        return this.abort(c, reason ?? "rolled back by the client", undefined, false, now);
      case "committing":
        if (outcome === "commit") return void c.decideWaiters.push({ to: from, since: now });
        return this.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is committing; a decision is never changed`));
      case "rolling_back":
        if (outcome === "rollback") return void c.decideWaiters.push({ to: from, since: now });
        return this.fail(from, abortedError(name, c.reason, c.participant));
      case "committed":
      case "rolled_back":
        return this.replyDecided(from, name, c.state, c.protocol, outcome, c.reason, c.participant, this.pendingOf(c));
      default:
        return this.fail(from, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is ${c.state}`));
    }
  }

  /** `unlogged`: the answer depends only on what earlier steps logged (the decision), not on this step's records. */
  private replyDecided(to: ReplyTo, name: string, state: TxnState, protocol: Protocol, asked: Outcome, reason?: string, participant?: string, pending: string[] = [], release?: Release) {
    if (state === "committed") {
      if (asked === "commit") return this.ok(to, { name, outcome: "committed", protocol, pending }, release);
      return this.fail(to, wireError(ErrorCode.INVALID_STATE, `transaction "${name}" is committed; a decision is never changed`), release);
    }
    if (asked === "rollback") return this.ok(to, { name, outcome: "rolled_back", protocol, pending }, release);
    return this.fail(to, abortedError(name, reason, participant), release);
  }

  /** Every view of `name` this sidecar has, orchestrated, coordinated or through its branches; the newest answers. */
  private status(name: string, from: ReplyTo) {
    const views: StatusView[] = [];
    const o = this.orchestrator.status(name);
    if (o) views.push(o as StatusView);
    const c = this.coords.get(name);
    const s = c ? undefined : this.reader.coordinator(name);
    if (c) views.push(coordStatus(c, this.id));
    else if (s) views.push(summaryStatus(s, this.id));
    for (const v of branchViews(name, this.id, this.byName.get(name) ?? [], this.reader.branchesOf(name))) {
      if (v.coordinator !== this.id) views.push(v);
      // A branch whose coordinator is this node, which holds no record of the name: presumed abort.
      else if (!c && !s) views.push({ ...v, state: v.state === "rolled_back" ? "rolled_back" : "rolling_back" });
    }
    const view = newestView(views);
    if (view) return this.ok(from, view);
    this.fail(
      from,
      wireError(
        ErrorCode.NOT_FOUND,
        `sidecar ${this.id} has no record of a transaction "${name}" in the last ${Math.round(timing.retentionMs / hourMs)} h: it neither coordinated it nor prepared a branch of it (a branch that only read leaves no record); ask its coordinator`,
      ),
    );
  }

  private list(state: TxnState | undefined, limit: number = limits.listRowsDefault) {
    const seen = new Set<string>();
    const out: Record<string, unknown>[] = [];
    for (const c of this.coords.values()) {
      if (out.length >= limit) break;
      seen.add(c.name);
      if (!state || c.state === state) out.push(coordStatus(c, this.id));
    }
    for (const o of this.orchestrator.list(state)) {
      if (out.length >= limit) break;
      seen.add(o.name as string);
      out.push(o);
    }
    for (const s of this.reader.list({ state, limit })) {
      if (out.length >= limit) break;
      if (seen.has(s.name)) continue;
      out.push("branches" in s ? summaryStatus(s, this.id) : (this.orchestrator.status(s.name) ?? { name: s.name, state: s.state }));
    }
    return out;
  }

  // ---- coordinator ---------------------------------------------------------

  private commit(c: Coord, now: number) {
    c.state = "committing";
    c.outcome = "commit";
    c.decidedAt = now;
    c.lastResend = now;
    this.persist({ r: "c.decision", name: c.name, protocol: c.protocol, outcome: "commit", branches: refs(c), createdAt: c.createdAt, at: now });
    this.announce(c);
    this.maybeFinish(c, now);
  }

  /** Roll back: logged first once c.prepared is durable, so the decision can never flip. */
  private abort(c: Coord, reason: string, participant: string | undefined, conflict: boolean, now: number) {
    c.state = "rolling_back";
    c.outcome = "rollback";
    c.decidedAt = now;
    c.lastResend = now;
    c.reason = reason;
    c.participant = participant;
    c.conflict = conflict;
    if (c.durablePrepared) {
      this.persist({ r: "c.decision", name: c.name, protocol: c.protocol, outcome: "rollback", branches: refs(c), createdAt: c.createdAt, at: now, reason, participant });
    }
    if (c.prepareWaiter) {
      this.fail(c.prepareWaiter, conflict ? conflictError(c.name, reason, participant) : abortedError(c.name, reason, participant));
      c.prepareWaiter = undefined;
    }
    this.announce(c);
    this.maybeFinish(c, now);
  }

  /** Send the decision to every branch that still owes an ack. */
  private announce(c: Coord) {
    for (const b of c.branches.values()) {
      if (needsAck(b, c.outcome)) this.send(b.sidecar, { t: "decision", name: c.name, branch: b.id, from: this.id, outcome: c.outcome! });
    }
  }

  private maybeFinish(c: Coord, now: number) {
    for (const b of c.branches.values()) if (needsAck(b, c.outcome)) return;
    c.state = c.outcome === "commit" ? "committed" : "rolled_back";
    c.finishedAt = now;
    this.persist({ r: "c.end", name: c.name, protocol: c.protocol, outcome: c.outcome!, branches: refs(c), createdAt: c.createdAt, at: now, reason: c.reason, participant: c.participant, ...(c.conflict ? { conflict: true } : {}) });
    // The outcome was durable before any branch heard it and every branch has acked: the answer need not wait for c.end,
    // which only lets the log forget the transaction (lost in a crash, recovery re-announces and the branches ack again).
    for (const w of c.decideWaiters) this.replyDecided(w.to, c.name, c.state, c.protocol, c.outcome!, c.reason, c.participant, [], "unlogged");
    c.decideWaiters = [];
  }

  private pendingOf(c: Coord): string[] {
    return [...c.branches.values()].filter((b) => needsAck(b, c.outcome)).map((b) => b.sidecar);
  }

  private onVote(msg: Extract<PeerMessage, { t: "vote" }>, now: number) {
    const c = this.coords.get(msg.name);
    const b = c?.branches.get(msg.branch);
    if (!c || !b) {
      // A yes from a branch we do not know (stale, or we lost an undecided txn): presumed abort.
      if (msg.vote === "yes") this.send(msg.from, { t: "decision", name: msg.name, branch: msg.branch, from: this.id, outcome: c ? "rollback" : this.presumed(msg.name, msg.branch) });
      return;
    }
    if (c.state !== "preparing" && c.state !== "active") {
      // Duplicate or late vote: tell a prepared branch the decision if there is one.
      if (msg.vote === "yes" && c.outcome) this.send(msg.from, { t: "decision", name: c.name, branch: b.id, from: this.id, outcome: c.outcome });
      return;
    }
    if (msg.vote === "no") {
      b.vote = "no";
      b.acked = true;
      return this.abort(c, msg.reason ?? `branch ${b.id} on ${b.sidecar} voted no`, b.sidecar, msg.conflict ?? false, now);
    }
    // A branch that prepared when its callback ended votes before the coordinator prepares: keep the vote.
    b.vote = msg.vote;
    if (msg.vote === "readonly") b.acked = true;
    if (c.state !== "preparing") return;
    for (const x of c.branches.values()) {
      if (x.vote === "yes" || x.vote === "readonly") continue;
      // The last vote missing is begin's own branch's: ask it now (askVotes held it back).
      if (x.id === c.ownBranch && msg.branch !== c.ownBranch) this.askVotes(c, false);
      return;
    }
    // Every branch voted yes durably: record it before beginDistributed resolves (DESIGN §8).
    c.state = "prepared";
    c.preparedAt = now;
    c.durablePrepared = true;
    this.persist({
      r: "c.prepared",
      name: c.name,
      protocol: c.protocol,
      branches: refs(c),
      createdAt: c.createdAt,
      at: now,
      preparedTimeoutMs: c.preparedTimeoutMs,
      traceparent: c.traceparent,
    });
    if (c.prepareWaiter) {
      this.ok(c.prepareWaiter, { name: c.name, state: "prepared", protocol: c.protocol });
      c.prepareWaiter = undefined;
    }
  }

  /** The outcome for a transaction this node does not hold in memory. */
  private presumed(name: string, branch: string): Outcome {
    const s = this.reader.coordinator(name);
    // A commit counts only for the branches it names: another branch is from an earlier transaction of the same name.
    return s && (s.state === "committed" || s.state === "committing") && s.branches.some((b) => b.id === branch) ? "commit" : "rollback";
  }

  private onEnlist(msg: Extract<PeerMessage, { t: "enlist" }>, now: number) {
    const c = this.coords.get(msg.name);
    if (c?.branches.has(msg.branch)) {
      // Retransmitted enlist: answer again once the enlist record is durable (it is, or is pending before this).
      if (c.state === "active" || c.state === "preparing") this.send(msg.from, { t: "enlisted", name: msg.name, branch: msg.branch, from: this.id });
      return;
    }
    const otherIncarnation = c && msg.incarnation && c.ownBranch && msg.incarnation !== c.ownBranch;
    if (!c || (otherIncarnation && isTerminal(c.state))) {
      // Maybe not begun yet: the token names a transaction whose begin has not arrived (the one in memory, if any, finished).
      if (this.parkedCount < limits.parkedEnlistsMax) {
        const list = this.parkedEnlists.get(msg.name);
        if (list) list.push({ msg, at: now });
        else this.parkedEnlists.set(msg.name, [{ msg, at: now }]);
        this.parkedCount++;
        return;
      }
      return this.refuseUnknown(msg);
    }
    if (otherIncarnation) {
      // A token of an earlier transaction with the same name must not join this one.
      return this.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: this.id, reason: `the token belongs to an earlier transaction named "${msg.name}"` });
    }
    if (c.state !== "active") {
      const code = c.state === "rolling_back" || c.state === "rolled_back" ? "TRANSACTION_ABORTED" : "INVALID_STATE";
      return this.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: this.id, reason: `transaction "${msg.name}" is ${c.state}; joins are accepted only while it is active`, code });
    }
    if (c.branches.size >= limits.branchesPerTxnMax) {
      return this.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: this.id, reason: `more than branchesPerTxnMax (${limits.branchesPerTxnMax}) branches`, code: "LIMIT_EXCEEDED" });
    }
    const ref = { id: msg.branch, sidecar: msg.from };
    c.branches.set(msg.branch, { ...ref, acked: false });
    this.persist({ r: "c.enlist", name: c.name, protocol: c.protocol, branch: ref, at: now });
    this.send(msg.from, { t: "enlisted", name: msg.name, branch: msg.branch, from: this.id });
  }

  private refuseUnknown(msg: Extract<PeerMessage, { t: "enlist" }>) {
    // Never begun there, or lost before it prepared (a coordinator crash): either way rolled back (presumed abort).
    const why = `sidecar ${this.id} coordinates no active transaction "${msg.name}" that this token names (it was rolled back, or never begun)`;
    this.send(msg.from, { t: "enlist_refused", name: msg.name, branch: msg.branch, from: this.id, reason: why, unknown: true, code: "TRANSACTION_ABORTED" });
  }

  /** Parked enlists whose begin did not come within enlistParkMs are refused as unknown (the joiner asks again while it is young). */
  private expireParkedEnlists(now: number) {
    for (const [name, list] of this.parkedEnlists) {
      // Oldest first: refuse the expired prefix, keep the rest.
      let expired = 0;
      while (expired < list.length && now - list[expired].at >= timing.enlistParkMs) this.refuseUnknown(list[expired++].msg);
      if (!expired) continue;
      this.parkedCount -= expired;
      if (expired === list.length) this.parkedEnlists.delete(name);
      else list.splice(0, expired);
    }
  }

  private onAck(msg: Extract<PeerMessage, { t: "ack" }>, now: number) {
    const c = this.coords.get(msg.name);
    const b = c?.branches.get(msg.branch);
    if (!c || !b || !c.outcome || b.acked) return;
    b.acked = true;
    if (c.state === "committing" || c.state === "rolling_back") this.maybeFinish(c, now);
  }

  private onQuery(msg: Extract<PeerMessage, { t: "query" }>) {
    const c = this.coords.get(msg.name);
    if (c && c.branches.has(msg.branch)) {
      // Undecided: the branch keeps waiting (it must never decide alone).
      if (c.outcome) this.send(msg.from, { t: "decision", name: c.name, branch: msg.branch, from: this.id, outcome: c.outcome });
      return;
    }
    // Not a branch of the transaction held under this name (never enlisted, or left from an earlier one of the same name): abort it.
    this.send(msg.from, { t: "decision", name: msg.name, branch: msg.branch, from: this.id, outcome: c ? "rollback" : this.presumed(msg.name, msg.branch) });
  }

  // ---- participant (branch) ------------------------------------------------

  private onPrepare(msg: Extract<PeerMessage, { t: "prepare" }>, now: number) {
    const b = this.branches.get(bkey(msg.name, msg.branch));
    if (!b) {
      return this.send(msg.from, { t: "vote", name: msg.name, branch: msg.branch, from: this.id, vote: "no", reason: `branch ${msg.branch} is unknown on sidecar ${this.id} (lost before prepare)` });
    }
    b.lastContact = now;
    switch (b.state) {
      case "joining":
      case "active":
        b.pendingPrepare = true; // prepared when its callback ends
        return;
      case "done":
        return this.prepareBranch(b, now);
      case "prepared":
        return this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "yes" });
      case "committed":
        if (b.writes.size === 0) this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "readonly" });
        return;
      case "rolled_back":
        return this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "no", reason: `branch ${b.id} was rolled back` });
    }
  }

  private prepareBranch(b: Branch, now: number) {
    b.pendingPrepare = false;
    const unprepared = b.resources.find((r) => !r.prepared);
    if (unprepared) {
      return this.voteNo(b, `the SQL branch in database "${unprepared.db}" (gid ${unprepared.gid}) was not prepared`, false, now);
    }
    const keys = new Set([...b.reads.keys(), ...b.writes.keys()]);
    const held = this.locks.tryLockAll(bkey(b.name, b.id), keys);
    const stale = held === undefined ? staleRead(b.reads, this.reader) : undefined;
    if (held !== undefined || stale !== undefined) {
      if (held === undefined) this.locks.releaseAll(bkey(b.name, b.id), keys);
      const reason = held !== undefined ? `key "${held}" is locked by another prepared transaction` : `key "${stale}" changed after it was read`;
      return this.voteNo(b, reason, true, now);
    }
    if (b.writes.size === 0 && b.resources.length === 0) {
      // Read-only: validated now, nothing to commit, no phase 2.
      this.locks.releaseAll(bkey(b.name, b.id), keys);
      b.state = "committed";
      b.vote = "readonly";
      b.finishedAt = now;
      b.applied = true;
      return this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "readonly" });
    }
    b.locked = [...keys];
    b.state = "prepared";
    b.vote = "yes";
    b.preparedAt = now;
    const resources = b.resources.length ? { resources: b.resources.map(sqlRef) } : {};
    this.persist({ r: "p.prepared", name: b.name, branch: b.id, coordinator: b.coordinator, writes: writeSet(b), reads: [...b.reads.keys()], at: now, ...resources, ...this.branchOrigin(b) });
    this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "yes" });
  }

  private onDecision(msg: Extract<PeerMessage, { t: "decision" }>, now: number) {
    const b = this.branches.get(bkey(msg.name, msg.branch));
    const ack = () => this.send(msg.from, { t: "ack", name: msg.name, branch: msg.branch, from: this.id });
    if (!b) return ack(); // finished and forgotten, or never prepared (presumed abort)
    b.lastContact = now;
    switch (b.state) {
      case "prepared": {
        const version = msg.outcome === "commit" ? ++this.kvVersion : 0;
        b.state = msg.outcome === "commit" ? "committed" : "rolled_back";
        b.finishedAt = now;
        this.persist({ r: "p.end", name: b.name, branch: b.id, coordinator: b.coordinator, outcome: msg.outcome, writes: msg.outcome === "commit" ? writeSet(b) : [], version, at: now, ...this.branchOrigin(b) });
        // The databases are finished after p.end is durable, and the ack waits for them: decided means done, so a
        // commit that returns is visible in every database (the reconciler still finishes what a crash interrupts).
        if (b.resources.length) {
          b.sqlUnfinished = true;
          this.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: b.resources.map(sqlRef), outcome: msg.outcome });
        }
        // Locks are released only once the outcome (and its writes) are durable.
        this.out.push({ k: "after", input: { k: "applied", name: b.name, branch: b.id, now } });
        return this.ackOnceSqlFinished(b, msg.from);
      }
      case "joining":
      case "active":
      case "done":
        if (msg.outcome === "rollback") this.abortBranch(b, now, b.state !== "joining", `rolled back by its coordinator`);
        return this.ackOnceSqlFinished(b, msg.from);
      case "committed":
      case "rolled_back":
        if (b.sqlUnfinished) this.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: b.resources.map(sqlRef), outcome: b.state === "committed" ? "commit" : "rollback" });
        return this.ackOnceSqlFinished(b, msg.from);
    }
  }

  private onEnlisted(msg: Extract<PeerMessage, { t: "enlisted" | "enlist_refused" }>, now: number) {
    const b = this.branches.get(bkey(msg.name, msg.branch));
    if (!b || b.state !== "joining") return;
    const waiter = b.joinWaiter;
    b.joinWaiter = undefined;
    if (msg.t === "enlisted") {
      b.state = "active";
      b.lastContact = now;
      const end = b.pendingEnd;
      b.pendingEnd = undefined;
      if (end && waiter) return this.end(end, waiter, now);
      if (waiter) this.ok(waiter, { name: b.name, branch: b.id, coordinator: b.coordinator });
      return;
    }
    if (msg.unknown && now - b.joinedAt < timing.resendMs) {
      // The token can travel faster than its begin (the client sends begin without waiting for it). The
      // coordinator holds such an enlist for enlistParkMs before it refuses it as unknown; the branch, while
      // young, asks again: at once the first time, then at each tick.
      b.joinWaiter = waiter;
      if (b.enlistRepeated) b.lastContact = now - timing.resendMs; // the next tick asks
      else {
        b.enlistRepeated = true;
        b.lastContact = now;
        this.sendEnlist(b);
      }
      return;
    }
    this.abortBranch(b, now, false);
    if (!waiter) return;
    if (msg.code === "TRANSACTION_ABORTED") this.fail(waiter, abortedError(b.name, `join refused: ${msg.reason}`, msg.from));
    else this.fail(waiter, wireError(msg.code === "LIMIT_EXCEEDED" ? ErrorCode.LIMIT_EXCEEDED : ErrorCode.INVALID_STATE, `join refused: ${msg.reason}`));
  }

  /**
   * Roll back a branch that never prepared (presumed abort: nothing needs logging). `enlisted`: its
   * coordinator knows it, so its rollback is the transaction's: logged lazily, for status only (a crash
   * that loses it leaves the branch unknown here, which presumed abort reads the same way). A branch
   * with SQL work logs it durably, so the reconciler rolls its gids back whatever happens next.
   */
  private abortBranch(b: Branch, now: number, enlisted = true, reason?: string) {
    if (b.state === "prepared") throw new Error(`abortBranch on prepared branch ${b.id}: only the coordinator decides`);
    b.pendingEnd = undefined;
    if (b.locked.length) this.locks.releaseAll(bkey(b.name, b.id), b.locked);
    b.locked = [];
    b.state = "rolled_back";
    b.finishedAt = now;
    b.applied = true;
    b.reason ??= reason;
    const rec: LogRecord = {
      r: "p.end",
      name: b.name,
      branch: b.id,
      coordinator: b.coordinator,
      outcome: "rollback",
      writes: [],
      version: 0,
      at: now,
      ...this.branchOrigin(b),
      ...(b.vote === "no" ? { vote: "no" as const } : {}),
      ...(b.reason ? { reason: b.reason.slice(0, limits.reasonCharsMax) } : {}),
    };
    if (b.resources.length) {
      this.persist(rec);
      b.sqlUnfinished = true;
      this.out.push({ k: "finish_sql", name: b.name, branch: b.id, resources: b.resources.map(sqlRef), outcome: "rollback" });
    } else if (enlisted && b.coordinator !== this.id) {
      this.persistLazy(rec); // the coordinator's own branch needs none: its c.end says it all
    }
    if (b.joinWaiter) {
      this.fail(b.joinWaiter, abortedError(b.name, "the transaction was rolled back before the join completed"));
      b.joinWaiter = undefined;
    }
  }

  /** The branch votes no and rolls back: it will never prepare. */
  private voteNo(b: Branch, reason: string, conflict: boolean, now: number) {
    b.vote = "no";
    this.abortBranch(b, now, b.state !== "joining", reason);
    this.send(b.coordinator, { t: "vote", name: b.name, branch: b.id, from: this.id, vote: "no", reason, ...(conflict ? { conflict: true } : {}) });
  }

  /** Who the branch belongs to, for its records: the transaction's incarnation and when the branch began. */
  private branchOrigin(b: Branch): { incarnation?: string; begun?: number } {
    return { ...(b.incarnation ? { incarnation: b.incarnation } : {}), ...(b.joinedAt ? { begun: b.joinedAt } : {}) };
  }

  /** Ack a decision, once the branch's SQL work is finished in its databases (at once without any). */
  private ackOnceSqlFinished(b: Branch, coordinator: string) {
    if (b.sqlUnfinished) return void (b.ackOwed = coordinator);
    this.send(coordinator, { t: "ack", name: b.name, branch: b.id, from: this.id });
  }

  /** The runtime finished (ok) or could not yet finish a branch's SQL work; a resent decision tries again. */
  private onSqlFinished(name: string, branch: string, ok: boolean) {
    const b = this.branches.get(bkey(name, branch));
    if (!b || !b.sqlUnfinished) return;
    // Not finished and no decision waits on it (the branch voted no): the reconciler finishes it from the log.
    if (!ok && !b.ackOwed) b.sqlUnfinished = false;
    if (!ok) return;
    b.sqlUnfinished = false;
    const to = b.ackOwed;
    b.ackOwed = undefined;
    if (to) this.send(to, { t: "ack", name: b.name, branch: b.id, from: this.id });
  }

  private onApplied(name: string, branch: string) {
    const b = this.branches.get(bkey(name, branch));
    if (!b) return;
    this.locks.releaseAll(bkey(name, branch), b.locked);
    b.locked = [];
    b.applied = true;
  }

  // ---- peers, time, connections, recovery -----------------------------------

  private onPeer(msg: PeerMessage, now: number) {
    switch (msg.t) {
      case "enlist":
        return this.onEnlist(msg, now);
      case "enlisted":
      case "enlist_refused":
        return this.onEnlisted(msg, now);
      case "prepare":
        return this.onPrepare(msg, now);
      case "vote":
        return this.onVote(msg, now);
      case "decision":
        return this.onDecision(msg, now);
      case "ack":
        return this.onAck(msg, now);
      case "query":
        return this.onQuery(msg);
      case "decide": {
        const id = ++this.forwardSeq;
        this.forwardedIn.set(id, { peer: msg.from, req: msg.req, name: msg.name });
        return this.decide(msg.name, msg.outcome, { conn: FORWARDED, id }, now);
      }
      case "decided":
        return this.onDecided(msg);
      default: {
        const never: never = msg;
        throw new Error(`unknown peer message ${JSON.stringify(never)}`);
      }
    }
  }

  private onTick(now: number) {
    for (const [req, f] of this.forwardedOut) {
      if (now < f.deadline) continue;
      this.forwardedOut.delete(req);
      this.fail(f.to, wireError(ErrorCode.OUTCOME_UNKNOWN, `the sidecar coordinating "${f.name}" did not answer in time; the decision may or may not have been made: ask status, or retry`));
    }
    this.orchestrator.tick(now);
    this.evictRetired(now);
    if (this.parkedCount) this.expireParkedEnlists(now);
    for (const c of this.liveCoords) {
      switch (c.state) {
        case "active":
        case "preparing":
          if (now >= c.deadline) this.abort(c, `timed out after ${c.timeoutMs} ms before every branch prepared`, undefined, false, now);
          else if (c.state === "preparing" && now - c.lastResend >= timing.resendMs) {
            // A prepare lost while its participant was down would otherwise wait out the whole timeoutMs.
            c.lastResend = now;
            this.askVotes(c, true);
          }
          break;
        case "prepared":
          if (c.preparedTimeoutMs !== undefined && now - (c.preparedAt ?? now) >= c.preparedTimeoutMs) {
            this.abort(c, `no decision within preparedTimeoutMs (${c.preparedTimeoutMs} ms)`, undefined, false, now);
          }
          break;
        case "committing":
        case "rolling_back":
          if (now - c.lastResend >= timing.resendMs) {
            c.lastResend = now;
            this.announce(c);
          }
          // Durable decision, some participants unreachable: whoever waited ackWaitMs is answered, with them as pending;
          // the decision is retried in the background. (Recovered and re-asked decisions are bounded the same way.)
          if (c.decideWaiters.length && now - c.decideWaiters[0].since >= this.ackWaitMs) {
            const due = c.decideWaiters.filter((w) => now - w.since >= this.ackWaitMs);
            c.decideWaiters = c.decideWaiters.filter((w) => now - w.since < this.ackWaitMs);
            const pending = this.pendingOf(c);
            const decided = c.outcome === "commit" ? "committed" : "rolled_back";
            for (const w of due) this.replyDecided(w.to, c.name, decided, c.protocol, c.outcome!, c.reason, c.participant, pending);
          }
          break;
        case "committed":
        case "rolled_back":
          this.liveCoords.delete(c);
          this.retired.push({ at: c.finishedAt ?? now, coord: c });
          break;
      }
    }
    for (const b of this.liveBranches) {
      switch (b.state) {
        case "joining":
          if (now >= b.deadline) this.abortBranch(b, now, false);
          else if (now - b.lastContact >= timing.resendMs) {
            b.lastContact = now;
            this.sendEnlist(b);
          }
          break;
        case "active":
        case "done":
          // A remote coordinator that never asked us to prepare in time has given up.
          if (b.coordinator !== this.id && now >= b.deadline) this.voteNo(b, `branch ${b.id} timed out before prepare`, false, now);
          break;
        case "prepared":
          // In doubt: ask, never decide alone.
          if (now - b.lastContact >= timing.askCoordinatorMs) {
            b.lastContact = now;
            this.send(b.coordinator, { t: "query", name: b.name, branch: b.id, from: this.id });
          }
          break;
        case "committed":
        case "rolled_back":
          // Kept live until its writes are applied, its locks released and its SQL work finished.
          if (b.applied && !b.sqlUnfinished) {
            this.liveBranches.delete(b);
            this.retired.push({ at: b.finishedAt ?? now, branch: b });
          }
          break;
      }
    }
  }

  private addCoord(c: Coord) {
    this.coords.set(c.name, c);
    this.liveCoords.add(c);
  }

  private addBranch(b: Branch) {
    this.branches.set(bkey(b.name, b.id), b);
    this.liveBranches.add(b);
    const same = this.byName.get(b.name);
    if (same) same.push(b);
    else this.byName.set(b.name, [b]);
  }

  private forgetBranch(b: Branch) {
    this.branches.delete(bkey(b.name, b.id));
    const same = this.byName.get(b.name)?.filter((x) => x !== b);
    if (same?.length) this.byName.set(b.name, same);
    else this.byName.delete(b.name);
  }

  /** Forget finished transactions and branches evictAfterMs after they finished (unless replaced meanwhile). */
  private evictRetired(now: number) {
    while (this.retiredHead < this.retired.length) {
      const r = this.retired[this.retiredHead];
      if (now - r.at < this.evictAfterMs) break;
      this.retiredHead++;
      if (r.coord && this.coords.get(r.coord.name) === r.coord) {
        this.coords.delete(r.coord.name);
        this.traces.delete(r.coord.name);
      } else if (r.branch) {
        const k = bkey(r.branch.name, r.branch.id);
        if (this.branches.get(k) === r.branch) {
          this.forgetBranch(r.branch);
          if (!this.coords.has(r.branch.name)) this.traces.delete(r.branch.name);
        }
      }
    }
    if (this.retiredHead > retiredCompactMin && this.retiredHead * 2 > this.retired.length) {
      this.retired.splice(0, this.retiredHead);
      this.retiredHead = 0;
    }
  }

  private onDisconnect(conn: number, now: number) {
    for (const c of this.liveCoords) {
      if (c.owner === conn && (c.state === "active" || c.state === "preparing")) {
        this.abort(c, "the client disconnected before the transaction was prepared", undefined, false, now);
      }
    }
    for (const b of this.liveBranches) {
      if (b.owner !== conn) continue;
      if (b.state === "joining" || b.state === "active") this.voteNo(b, `the client of branch ${b.id} disconnected`, false, now);
    }
  }

  private onRecover(coordinators: CoordinatorSummary[], branches: BranchSummary[], now: number, orchestrations: OrchestrationSummary[] = []) {
    this.kvVersion = Math.max(this.kvVersion, this.reader.kvVersion());
    this.orchestrator.recover(orchestrations, now);
    for (const s of branches) {
      if (s.state === "active") {
        // SQL resources registered, branch never prepared: presumed abort, made durable; roll the databases back.
        this.persist({ r: "p.end", name: s.name, branch: s.branch, coordinator: s.coordinator, outcome: "rollback", writes: [], version: 0, at: now });
        if (s.resources?.length) this.out.push({ k: "finish_sql", name: s.name, branch: s.branch, resources: s.resources, outcome: "rollback" });
        continue;
      }
      const b = this.newBranch(s.name, s.branch, s.coordinator, "prepared", undefined, Infinity, now);
      b.resources = (s.resources ?? []).map((r) => ({ ...r, prepared: true }));
      b.incarnation = s.incarnation;
      b.vote = "yes";
      b.preparedAt = s.preparedAt;
      b.joinedAt = s.begunAt ?? 0;
      for (const [k, v, d] of s.writes) b.writes.set(k, { value: v, deleted: d });
      b.locked = [...new Set([...s.reads, ...s.writes.map((w) => w[0])])];
      b.lastContact = -Infinity; // ask at the first tick
      const clash = this.locks.tryLockAll(bkey(b.name, b.id), b.locked);
      if (clash !== undefined) throw new Error(`recovery: key ${clash} locked by two prepared branches`);
      this.addBranch(b);
      // Its coordinator is this node, whose log does not list it: presumed abort, decided here and now, so the
      // name is free again as soon as the sidecar is ready (the branch would only ask itself at the first tick).
      const c = b.coordinator === this.id ? this.reader.coordinator(b.name) : undefined;
      if (b.coordinator === this.id && (!c || c.state === "rolled_back" || !c.branches.some((x) => x.id === b.id))) {
        this.onDecision({ t: "decision", name: b.name, branch: b.id, from: this.id, outcome: "rollback" }, now);
      }
    }
    for (const s of coordinators) {
      const c: Coord = {
        name: s.name,
        protocol: s.protocol,
        state: s.state,
        branches: new Map(s.branches.map((r) => [r.id, { id: r.id, sidecar: r.sidecar, acked: !!r.readonly, vote: r.readonly ? "readonly" : "yes" }])),
        createdAt: s.createdAt,
        deadline: now,
        timeoutMs: 0,
        preparedAt: s.preparedAt,
        decidedAt: s.decidedAt,
        preparedTimeoutMs: s.preparedTimeoutMs,
        traceparent: s.traceparent,
        durablePrepared: s.state !== "active",
        reason: s.reason,
        participant: s.participant,
        decideWaiters: [],
        lastResend: now,
      };
      this.addCoord(c);
      if (s.traceparent) this.traces.set(s.name, s.traceparent);
      if (s.state === "committing") {
        c.outcome = "commit";
        this.announce(c);
      } else if (s.state === "rolling_back") {
        c.outcome = "rollback";
        this.announce(c);
      } else if (s.state === "active") {
        // Crashed before every branch prepared: presumed abort.
        for (const b of c.branches.values()) b.vote = undefined;
        this.abort(c, "the coordinator restarted before the transaction was prepared", undefined, false, now);
      }
      // "prepared" waits for its client's decision (or preparedTimeoutMs).
    }
  }

  // ---- deciding a transaction another sidecar coordinates ---------------------

  /** Ask the coordinator: the one a local branch names, else every configured peer. */
  private forwardDecision(name: string, outcome: Outcome, from: ReplyTo, now: number) {
    let coordinator: string | undefined;
    for (const b of this.byName.get(name) ?? []) if (b.coordinator !== this.id) coordinator = b.coordinator;
    if (!coordinator) for (const b of this.reader.branchesOf(name)) if (b.coordinator !== this.id) coordinator = b.coordinator;
    const targets = coordinator ? [coordinator] : this.peers;
    if (targets.length === 0) return this.fail(from, wireError(ErrorCode.NOT_FOUND, `no transaction "${name}" coordinated by sidecar ${this.id}, and it has no peers to ask`));
    const req = `${this.id}.${this.bootId}.f${(++this.forwardSeq).toString(36)}`;
    // The coordinator answers within its ackWaitMs; the margin covers the two hops.
    this.forwardedOut.set(req, { to: from, name, asked: targets.length, notFound: 0, deadline: now + this.ackWaitMs + timing.forwardedDecisionMarginMs });
    for (const to of targets) this.send(to, { t: "decide", name, outcome, req, from: this.id });
  }

  private onDecided(msg: Extract<PeerMessage, { t: "decided" }>) {
    const f = this.forwardedOut.get(msg.req);
    if (!f) return; // answered already, or timed out
    const body = msg.body as ReplyBody;
    const notFound = !body.ok && (body as { error?: { code?: string } }).error?.code === ErrorCode.NOT_FOUND;
    if (notFound && ++f.notFound < f.asked) return; // wait for the sidecar that coordinates it
    this.forwardedOut.delete(msg.req);
    if (notFound) return this.fail(f.to, wireError(ErrorCode.NOT_FOUND, `no sidecar among ${f.asked} asked coordinates a transaction "${f.name}"`));
    this.reply(f.to, body);
  }

  // ---- helpers ---------------------------------------------------------------

  private sendEnlist(b: Branch) {
    this.send(b.coordinator, { t: "enlist", name: b.name, branch: b.id, from: this.id, traceparent: b.traceparent, incarnation: b.incarnation });
  }

  private newBranchId(): string {
    return `${this.id}.${this.bootId}.${(++this.seq).toString(36)}`;
  }

  private newBranch(name: string, id: string, coordinator: string, state: BranchState, owner: number | undefined, deadline: number, now: number, traceparent?: string): Branch {
    return {
      name,
      id,
      coordinator,
      state,
      reads: new Map(),
      writes: new Map(),
      owner,
      pendingPrepare: false,
      deadline,
      lastContact: now,
      locked: [],
      ops: 0,
      applied: false,
      traceparent,
      resources: [],
      joinedAt: 0,
    };
  }
}

function sqlRef(r: SqlResourceRef): SqlResourceRef {
  return { db: r.db, gid: r.gid, kind: r.kind };
}

function needsAck(b: CoordBranch, outcome: Outcome | undefined): boolean {
  if (b.acked || b.vote === "readonly" || b.vote === "no") return false;
  // On commit only yes-voters take part in phase 2; on rollback everyone not yet finished does.
  return outcome === "commit" ? b.vote === "yes" : true;
}

function refs(c: Coord): BranchRef[] {
  return [...c.branches.values()].map((b) => (b.vote === "readonly" ? { id: b.id, sidecar: b.sidecar, readonly: true } : { id: b.id, sidecar: b.sidecar }));
}

function writeSet(b: Branch): Write[] {
  return [...b.writes].map(([k, w]) => [k, w.value, w.deleted]);
}

function abortedError(name: string, reason = "the transaction was rolled back", participant?: string): WireError {
  return wireError(ErrorCode.TRANSACTION_ABORTED, `transaction "${name}" was rolled back: ${reason}`, { participant, reason });
}

function conflictError(name: string, reason = "conflict", participant?: string): WireError {
  return wireError(ErrorCode.TRANSACTION_CONFLICT, `transaction "${name}" conflicted and was rolled back: ${reason}; retry it`, { participant, reason });
}

function branchStateName(state: BranchState): string {
  return state === "done" || state === "joining" ? "active" : state;
}
