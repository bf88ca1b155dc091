// The engine's shared core: one sidecar's state (its coordinators, its branches,
// what waits on them) and the effect sink every role writes to. The roles
// (coordinator.ts, participant.ts, early-enlist.ts, forwarding.ts,
// sql-resources.ts, recovery.ts, views.ts) are functions over it; node.ts
// routes inputs to them. Pure: no I/O, no clock, no randomness (DESIGN §2).
import type { WireError } from "../protocol/errors.ts";
import { ErrorCode, wireError } from "../protocol/errors.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import type { SqlKind } from "../protocol/sql-branch.ts";
import { timing } from "../limits.ts";
import { LockTable } from "../store/locks.ts";
import type { LogRecord } from "../wal/records.ts";
import type { WalReader } from "../wal/wal.ts";
import { Hosted } from "./hosted.ts";
import { Orchestrator } from "./orchestrator.ts";
import { abortedError } from "./rollback-errors.ts";
import type { Branch, BranchState, Coord } from "./state.ts";
import type { ClientInput, Effect, ReplyBody, ReplyTo } from "./types.ts";

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

/** A peer message of one kind. */
export type Peer<T extends PeerMessage["t"]> = Extract<PeerMessage, { t: T }>;
/** A client request of one op. */
export type Op<O extends ClientInput["op"]> = Extract<ClientInput, { op: O }>;

export const bkey = (name: string, branch: string) => `${name}/${branch}`;

/** The ReplyTo connection of a request another sidecar forwarded here (forwarding.ts): its answer goes back over the federation. */
export const FORWARDED = -1;
export type ForwardedIn = Map<number, { peer: string; req: string; name: string }>;
export type ForwardedOut = Map<string, { to: ReplyTo; name: string; asked: number; notFound: number; deadline: number }>;

/** A reply sent before the one rule would send it: see Effect "reply" in types.ts. */
export type Release = "unlogged" | "immediate";

/** Evicted entries at the head of `retired` before its array is compacted (and only once they are over half of it). */
const retiredCompactMin = 1024;

export class Engine {
  readonly id: string;
  readonly bootId: string;
  readonly reader: WalReader;
  readonly ackWaitMs: number;
  readonly evictAfterMs: number;
  readonly databases: ReadonlyMap<string, { kind: SqlKind; url: string }>;
  readonly peers: string[];
  readonly coords = new Map<string, Coord>();
  readonly branches = new Map<string, Branch>();
  // The tick looks only at unfinished work; finished entries wait in `retired`
  // (oldest first) until evictAfterMs, so a tick costs what is in flight, not
  // what finished in the last second.
  readonly liveCoords = new Set<Coord>();
  readonly liveBranches = new Set<Branch>();
  private readonly retired: { at: number; coord?: Coord; branch?: Branch }[] = [];
  private retiredHead = 0;
  /** Every branch in memory, by transaction name: names held, status, forwarding. */
  readonly byName = new Map<string, Branch[]>();
  readonly locks = new LockTable();
  readonly traces = new Map<string, string>();
  readonly orchestrator: Orchestrator;
  /** The participants of orchestrated transactions (this node's or a peer's) that run here. */
  readonly hosted: Hosted;
  /** Decisions asked of this node by another sidecar's client, waiting for their answer. */
  readonly forwardedIn: ForwardedIn = new Map();
  /** Decisions this node's clients asked of other sidecars. */
  readonly forwardedOut: ForwardedOut = new Map();
  forwardSeq = 0;
  /**
   * Enlists for a name with no transaction here yet, by name, oldest first. The client sends begin
   * before it hands out the token, but the token's enlist can still be read first (another socket,
   * same turn): held here, it is answered when the begin arrives, not refused and asked again.
   */
  readonly parkedEnlists = new Map<string, { msg: Peer<"enlist">; at: number }[]>();
  parkedCount = 0;
  kvVersion: number;
  private seq = 0;
  /** The effects of the step under way. */
  out: Effect[] = [];

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
        send: (to, msg) => this.send(to, msg, to !== this.id),
        random,
        nextVersion: () => this.nextVersion(),
        newId: () => this.newBranchId(),
      },
      this.id,
      this.bootId,
    );
    this.hosted = new Hosted({
      id: this.id,
      reader: this.reader,
      locks: this.locks,
      persist: (rec) => this.persist(rec),
      send: (to, msg) => this.send(to, msg),
      invoke: (invoke) => this.out.push({ k: "invoke", invoke }),
      after: (input) => this.out.push({ k: "after", input }),
      nextVersion: () => this.nextVersion(),
    });
  }

  // ---- effects -------------------------------------------------------------

  persist(rec: LogRecord) {
    this.out.push({ k: "persist", rec });
  }
  persistLazy(rec: LogRecord) {
    this.out.push({ k: "persist", rec, lazy: true });
  }
  /** `ifLinked`: over a link that is up now or not at all (see Effect "send"). */
  send(to: string, msg: PeerMessage, ifLinked = false) {
    const tp = this.traces.get(msg.name);
    const traced = tp && !msg.traceparent ? { ...msg, traceparent: tp } : msg;
    this.out.push(ifLinked ? { k: "send", to, msg: traced, ifLinked } : { k: "send", to, msg: traced });
  }
  ok(to: ReplyTo, result: Record<string, unknown> = {}, release?: Release) {
    this.reply(to, { ok: true, ...result } as ReplyBody, release);
  }
  fail(to: ReplyTo, error: WireError, release?: Release) {
    this.reply(to, { ok: false, error }, release);
  }
  /** `release`: sent sooner than the rule says (see Effect "reply"); the default waits for everything logged so far. */
  reply(to: ReplyTo, body: ReplyBody, release?: Release) {
    if (to.conn !== FORWARDED) return void this.out.push(release ? { k: "reply", to, body, [release]: true } : { k: "reply", to, body });
    const f = this.forwardedIn.get(to.id);
    if (!f) return;
    this.forwardedIn.delete(to.id);
    this.send(f.peer, { t: "decided", name: f.name, req: f.req, from: this.id, body });
  }

  /** The built-in store's next commit version. */
  nextVersion(): number {
    return ++this.kvVersion;
  }

  // ---- what is in memory -----------------------------------------------------

  addCoord(c: Coord) {
    this.coords.set(c.name, c);
    this.liveCoords.add(c);
  }

  addBranch(b: Branch) {
    this.branches.set(bkey(b.name, b.id), b);
    this.liveBranches.add(b);
    const same = this.byName.get(b.name);
    if (same) same.push(b);
    else this.byName.set(b.name, [b]);
  }

  /** A finished transaction leaves the tick; it is forgotten evictAfterMs after it finished. */
  retireCoord(c: Coord, now: number) {
    this.liveCoords.delete(c);
    this.retired.push({ at: c.finishedAt ?? now, coord: c });
  }

  retireBranch(b: Branch, now: number) {
    this.liveBranches.delete(b);
    this.retired.push({ at: b.finishedAt ?? now, branch: b });
  }

  private forgetBranch(b: Branch) {
    this.branches.delete(bkey(b.name, b.id));
    const same = this.byName.get(b.name)?.filter((x) => x !== b);
    if (same?.length) this.byName.set(b.name, same);
    else this.byName.delete(b.name);
  }

  /** Forget finished transactions and branches evictAfterMs after they finished (unless replaced meanwhile). */
  evictRetired(now: number) {
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

  branch(name: string, branch: string): Branch | undefined {
    return this.branches.get(bkey(name, branch));
  }

  /** The branch a client names for a read or write, if it may still be used. */
  activeBranch(name: string, branch: string | undefined, from: ReplyTo): Branch | undefined {
    const b = branch === undefined ? undefined : this.branch(name, branch);
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

  newBranchId(): string {
    return `${this.id}.${this.bootId}.${(++this.seq).toString(36)}`;
  }

  newBranch(name: string, id: string, coordinator: string, state: BranchState, owner: number | undefined, deadline: number, now: number, traceparent?: string): Branch {
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
