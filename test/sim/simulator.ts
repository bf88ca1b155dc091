// Deterministic simulator (DESIGN §2, §8): the real Node step function on 2–4
// simulated sidecars, each with a MemoryWal that loses its unflushed tail on a
// crash, a network that drops, delays, duplicates, reorders and partitions,
// simulated clients running bank transfers and orchestrated Sagas (saga.ts),
// and invariant checks after every event. One seed fixes every choice, so a failing seed replays exactly.
//
// Each node's effects are carried out by the production Runtime
// (src/runtime/runtime.ts) over the node's MemoryWal: the simulator decides
// when the log flushes (and so when effects may go), the Runtime's clock is
// the virtual time and its scheduler the event queue. A crash drops the
// unflushed tail, the node's memory, its Runtime with its unreleased effects,
// and its client connections.
import { timing } from "../../src/limits.ts";
import type { BarrierBrokenRule } from "../../src/participants/barrier.ts";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import type { PeerMessage } from "../../src/protocol/messages.ts";
import type { BrokenPlan } from "../../src/runtime/effect-plan.ts";
import { Prng } from "../../src/runtime/prng.ts";
import { type Engine, Runtime, type RuntimeIo } from "../../src/runtime/runtime.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, Effect, Input, ParticipantCall, ReplyBody, ReplyTo } from "../../src/txn/types.ts";
import { filterUnfinished } from "../../src/wal/index-view.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import { isTerminal } from "../../src/wal/records.ts";
import { EventQueue } from "./event-queue.ts";
import { Checker, Violation } from "./invariants.ts";
import { Bank } from "./workload.ts";
import { Sagas, simEndpoint } from "./saga.ts";
import { SagaChecker } from "./saga-invariants.ts";
import { describeEffect, describeInput } from "./trace.ts";

/**
 * Deliberately broken rules, to prove the checks catch them (the Node is never changed):
 * - the engine rule, planted in the runtime's effect plan (BrokenPlan, effect-plan.ts): send-before-persist,
 *   unpersisted-step-skips-wait, call-before-persist;
 * - participant-decides-alone: a branch in doubt for 500 ms rolls back by itself (a wrapper around Node.step);
 * - compensation-unlogged: the o.step record of a finished compensation is dropped (a wrapper around Node.step);
 * - barrier-*: a rule of the production barrier the simulated participants run (src/participants/barrier.ts).
 */
export type BrokenRule = BrokenPlan | "participant-decides-alone" | "compensation-unlogged" | BarrierBrokenRule;

function brokenPlan(rule: BrokenRule | undefined): BrokenPlan | undefined {
  return rule === "send-before-persist" || rule === "unpersisted-step-skips-wait" || rule === "call-before-persist" ? rule : undefined;
}

export interface SimOptions {
  brokenRule?: BrokenRule;
  /** Print every event (used by replay). */
  trace?: boolean;
  /** Invariants not to check, to show that another one still catches a broken rule. */
  ignore?: string[];
}

export interface SimStats {
  nodes: number;
  events: number;
  steps: number;
  txns: number;
  committed: number;
  rolledBack: number;
  sagas: number;
  sagasCommitted: number;
  sagasCompensated: number;
  /** Sagas that ended failed and were resolved by the simulated operator. */
  sagasResolved: number;
  /** Saga steps whose action the orchestrator logged as never reached. */
  sagaStepsUnreached: number;
  crashes: number;
  messages: number;
  dropped: number;
  /** Simulated milliseconds: the fault phase, then until everything was final. */
  faultMs: number;
  settleMs: number;
}

export interface SimResult {
  seed: number;
  violation?: Violation;
  stats: SimStats;
}

/** What a simulated client gets for a request: the node's reply, or nothing because the connection died. */
export type Answer = ReplyBody | { lost: true };

/** A client request as the simulated clients write it; the connection adds the id. */
export type Request = { [Op in ClientInput["op"]]: Omit<Extract<ClientInput, { op: Op }>, "id"> }[ClientInput["op"]];

/** A client's connection to one node; dies with that node. */
export interface Conn {
  id: number;
  node: string;
  /** The node's epoch when the connection opened: a crash ends the epoch and the connection. */
  epoch: number;
  open: boolean;
  nextId: number;
  pending: Map<number, (a: Answer) => void>;
  /** Requests and replies on one stream stay in order. */
  lastIn: number;
  lastOut: number;
}

export interface SimNode {
  id: string;
  wal: MemoryWal;
  /** Undefined while the node is down. */
  node?: Node;
  /** The production runtime carrying out the node's effects; a new one each boot. */
  runtime?: Runtime;
  /** Counts crashes: events of an older epoch are void. */
  epoch: number;
  boots: number;
  /** The highest store version flushed (reads outside a transaction must show no more). */
  durableKvVersion: number;
  flushScheduled: boolean;
  /** participant-decides-alone: when each branch was first seen in doubt. */
  inDoubtSince: Map<string, number>;
}

/** Fault intensities, drawn per seed (swarm testing); every kind is on in every seed. */
export interface Faults {
  dropP: number;
  dupP: number;
  delayMaxMs: number;
  longDelayP: number;
  flushDelayMaxMs: number;
  longFlushP: number;
  crashGapMs: number;
  crashAfterStepP: number;
  partitionGapMs: number;
  disconnectP: number;
  abandonP: number;
  txnGapMs: number;
}

/** After the faults stop, everything must be final within this much simulated time. */
export const settleBoundMs = 10_000;
const settleCheckMs = 100;
const downMaxMs = 400;

/** The one line that replays a seed with its full event trace. */
export function replayCommand(seed: number, brokenRule?: BrokenRule): string {
  return `npm run sim:replay -- ${seed}${brokenRule ? ` --broken=${brokenRule}` : ""}`;
}

export function simulate(seed: number, opts: SimOptions = {}): SimResult {
  const sim = new Sim(seed, opts);
  let violation: Violation | undefined;
  try {
    sim.run();
  } catch (e) {
    // The engine throwing (e.g. an assertion inside Node) is a failure like any violated invariant.
    violation = e instanceof Violation ? e : sim.violation("engine", `the engine threw: ${(e as Error).stack ?? e}`);
  }
  return { seed, violation, stats: sim.summary() };
}

export class Sim {
  readonly rng: Prng;
  readonly faults: Faults;
  readonly nodes: SimNode[] = [];
  readonly nodeIds: string[] = [];
  readonly conns = new Map<number, Conn>();
  readonly checker: Checker;
  readonly bank: Bank;
  readonly sagas: Sagas;
  readonly sagaChecker: SagaChecker;
  now = 1_000;
  events = 0;
  faultsOn = true;
  readonly faultEnd: number;
  /** Short, per seed, so commits answered with pending branches and evicted transactions happen within a run. */
  private readonly ackWaitMs: number;
  private readonly evictAfterMs: number;
  private readonly queue = new EventQueue();
  private readonly byId = new Map<string, SimNode>();
  private partition?: Set<string>;
  private nextConn = 1;
  private settled?: number;
  /** Reads outside a transaction: the store version they saw, checked durable when the reply arrives. */
  private readonly readVersions = new Map<string, number>();
  private readonly stats = { steps: 0, crashes: 0, messages: 0, dropped: 0 };
  /** The share of new client flows that are orchestrated Sagas (10–60 %; the rest are 2PC transfers), per seed. */
  private readonly sagaShare: number;

  constructor(
    readonly seed: number,
    readonly opts: SimOptions,
  ) {
    const rng = (this.rng = new Prng(seed));
    const n = rng.range(2, 4);
    for (let i = 0; i < n; i++) {
      const id = String.fromCharCode(65 + i);
      const sn: SimNode = {
        id,
        wal: new MemoryWal(false),
        epoch: 0,
        boots: 0,
        durableKvVersion: 0,
        flushScheduled: false,
        inDoubtSince: new Map(),
      };
      this.nodes.push(sn);
      this.nodeIds.push(id);
      this.byId.set(id, sn);
    }
    // Every kind of fault is on in every seed; only the intensities vary.
    this.faults = {
      dropP: 0.01 + rng.next() * 0.14,
      dupP: 0.01 + rng.next() * 0.09,
      delayMaxMs: rng.range(2, 60),
      longDelayP: 0.005 + rng.next() * 0.045,
      flushDelayMaxMs: rng.range(1, 30),
      longFlushP: 0.005 + rng.next() * 0.045,
      crashGapMs: rng.range(200, 2_000),
      crashAfterStepP: 0.0001 + rng.next() * 0.0009,
      partitionGapMs: rng.range(100, 1_500),
      disconnectP: 0.005 + rng.next() * 0.045,
      abandonP: 0.002 + rng.next() * 0.018,
      txnGapMs: rng.range(20, 200),
    };
    this.faultEnd = this.now + rng.range(1_000, 2_500);
    this.ackWaitMs = rng.range(100, 2_000);
    this.evictAfterMs = rng.range(200, 3_000);
    this.checker = new Checker(this);
    this.bank = new Bank(this, rng.range(3, 8));
    this.sagas = new Sagas(this);
    this.sagaChecker = new SagaChecker(this, this.sagas, this.checker);
    this.sagaShare = 0.1 + rng.next() * 0.5;
  }

  run(): void {
    this.log(`seed ${this.seed}: nodes ${this.nodeIds.join(",")}, faults until t=${this.faultEnd}, ${this.bank.accounts.length} accounts, ${JSON.stringify(this.faults)}`);
    for (const sn of this.nodes) this.restart(sn);
    for (const sn of this.nodes) this.tickLoop(sn, this.rng.int(timing.tickMs));
    this.startLoop();
    // At least one crash and one partition in every seed's fault phase, then more at the seed's rate.
    this.crashLoop(this.rng.int(this.faultEnd - this.now));
    this.partitionLoop(this.rng.int(this.faultEnd - this.now));
    this.queue.push(this.faultEnd, () => this.endFaults());
    while (this.settled === undefined) {
      const ev = this.queue.pop();
      if (!ev) throw new Error("the event queue ran dry");
      this.now = ev.at;
      this.events++;
      ev.run();
      this.checker.checkDurable();
    }
  }

  summary(): SimStats {
    const committed = this.bank.txns.filter((t) => this.checker.durableCoordinator(t.coordinator, t.name)?.state === "committed").length;
    const sagaEnds = this.sagas.sagas.map((s) => this.sagaChecker.durable(s.node, s.name));
    return {
      sagas: this.sagas.sagas.length,
      sagasCommitted: sagaEnds.filter((s) => s?.state === "committed").length,
      sagasCompensated: sagaEnds.filter((s) => s?.state === "compensated").length,
      sagasResolved: sagaEnds.filter((s) => s?.reason?.startsWith("resolved by an operator")).length,
      sagaStepsUnreached: sagaEnds.reduce((n, s) => n + (s?.done.filter((d) => d.some((x) => x.op === "execute" && x.outcome === "unreached")).length ?? 0), 0),
      nodes: this.nodes.length,
      events: this.events,
      txns: this.bank.txns.length,
      committed,
      rolledBack: this.bank.txns.length - committed,
      faultMs: this.faultEnd - 1_000,
      settleMs: (this.settled ?? this.now) - this.faultEnd,
      ...this.stats,
    };
  }

  violation(invariant: string, detail: string): Violation {
    return new Violation(invariant, this.seed, this.events, this.now, detail, replayCommand(this.seed, this.opts.brokenRule));
  }

  node(id: string): SimNode {
    const sn = this.byId.get(id);
    if (!sn) throw new Error(`unknown node ${id}`);
    return sn;
  }

  /** Run fn after ms of simulated time. */
  later(ms: number, fn: () => void): void {
    this.queue.push(this.now + ms, fn);
  }

  private log(line: string): void {
    if (this.opts.trace) console.log(`[t=${this.now} #${this.events}] ${line}`);
  }

  // ---- each node's runtime: the production one ---------------------------------

  /** What the node's Runtime does with the world: this simulated one. */
  private io(sn: SimNode): RuntimeIo {
    return {
      sendPeer: (to, msg) => this.send(sn, to, msg),
      reply: (to, body) => this.reply(to, body),
      call: (call, done) => this.callParticipant(sn, call, done),
      invoke: () => {
        throw new Error("invoke effects are not simulated: the simulated Sagas use no service: participants");
      },
      finishSql: () => {
        throw new Error("finish_sql effects are not simulated: the simulated clients use no SQL branches");
      },
      observe: { step: (input, effects) => this.observeStep(sn, input, effects), records: () => this.scheduleFlush(sn) },
      onWalFailure: (err) => {
        throw err;
      },
    };
  }

  /** The Node as its Runtime steps it: itself, or wrapped in a broken rule that is not the runtime's. */
  private engine(sn: SimNode, node: Node): Engine {
    if (this.opts.brokenRule === "participant-decides-alone") return { id: node.id, step: (input) => this.decideAlone(sn, node, input) };
    if (this.opts.brokenRule === "compensation-unlogged") {
      return { id: node.id, step: (input) => node.step(input).filter((e) => !(e.k === "persist" && e.rec.r === "o.step" && e.rec.op === "compensate")) };
    }
    return node;
  }

  /** Every step, before its effects are carried out: the per-step checks, the trace, and a crash now and then. */
  private observeStep(sn: SimNode, input: Input, effects: Effect[]): void {
    this.stats.steps++;
    if (this.opts.trace && (input.k !== "tick" || effects.length)) {
      this.log(`${sn.id} <- ${describeInput(input)}${effects.length ? `\n      -> ${effects.map(describeEffect).join("\n      -> ")}` : ""}`);
    }
    this.checker.onStep(sn, input, effects);
    this.sagaChecker.onStep(sn, effects);
    if (input.k === "client" && input.req.op === "get" && input.req.name === undefined) {
      this.readVersions.set(`${input.from.conn}:${input.from.id}`, sn.wal.kvVersion());
    }
    if (this.faultsOn && this.rng.chance(this.faults.crashAfterStepP)) this.later(0, () => this.crash(sn));
  }

  private scheduleFlush(sn: SimNode): void {
    if (sn.flushScheduled) return;
    sn.flushScheduled = true;
    const epoch = sn.epoch;
    const long = this.faultsOn && this.rng.chance(this.faults.longFlushP);
    this.later(long ? this.rng.int(300) : this.rng.int(this.faults.flushDelayMaxMs + 1), () => {
      if (sn.epoch !== epoch) return;
      sn.flushScheduled = false;
      for (const rec of sn.wal.unflushed()) if ("name" in rec) this.checker.touch(rec.name);
      // The runtime hears of it at once and schedules what waited for it.
      sn.wal.flush();
      sn.durableKvVersion = sn.wal.durableKvVersion();
      this.log(`${sn.id} flushed up to ${sn.wal.flushedUpTo}`);
    });
  }

  /** participant-decides-alone: a branch in doubt for 500 ms rolls back by itself (wrapped around the real Node). */
  private decideAlone(sn: SimNode, node: Node, input: Input): Effect[] {
    const effects = node.step(input);
    if (input.k !== "tick") return effects;
    for (const b of [...node.branches.values()]) {
      if (b.state !== "prepared") continue;
      const key = `${b.name}/${b.id}`;
      const since = sn.inDoubtSince.get(key);
      if (since === undefined) sn.inDoubtSince.set(key, input.now);
      else if (input.now - since >= 500) {
        const msg: PeerMessage = { t: "decision", name: b.name, branch: b.id, from: b.coordinator, outcome: "rollback" };
        effects.push(...node.step({ k: "peer", msg, now: input.now }));
      }
    }
    return effects;
  }

  // ---- simulated participants of Sagas -----------------------------------------

  /**
   * Like the runtime: one call, one call_result — the participant's answer, or "retry" once call.timeoutMs
   * passes. The request and the answer may each be lost or delayed (a late request still applies at the
   * participant); a node crash loses the result, never what the participant did. Under faults a result is
   * sometimes fed to the node again later (duplicated or late), which the orchestrator must ignore.
   */
  private callParticipant(sn: SimNode, call: ParticipantCall, done: (o: CallOutcome) => void): void {
    if (!call.endpoint.startsWith(simEndpoint)) throw new Error(`call to ${call.endpoint}: only simulated participants are simulated`);
    this.sagaChecker.callLeaves(sn, call);
    this.log(`${sn.id} calls ${call.participantId} ${call.op} #${call.callId} (${call.idempotencyKey})`);
    let answered = false;
    // The runtime that made the call feeds the result (a crash stopped it, and the result is lost).
    const deliver = (o: CallOutcome) => {
      if (answered) return;
      answered = true;
      done(o);
      if (this.faultsOn && this.rng.chance(this.faults.dupP)) this.later(this.rng.int(500), () => done(o));
    };
    this.later(call.timeoutMs, () => deliver({ outcome: "retry", error: `${call.endpoint} did not answer ${call.op} within ${call.timeoutMs} ms` }));
    const delay = () => 1 + this.rng.int(this.faults.delayMaxMs) + (this.faultsOn && this.rng.chance(this.faults.longDelayP) ? this.rng.int(1_000) : 0);
    if (this.sagas.refuses(call)) {
      // The connection is refused: nothing reaches the participant, and the caller can tell.
      this.log(`${call.participantId} refuses the connection of ${call.op} #${call.callId}`);
      return this.later(1 + this.rng.int(this.faults.delayMaxMs), () => deliver({ outcome: "retry", reached: false, error: `${call.endpoint}: ECONNREFUSED` }));
    }
    if (this.faultsOn && this.rng.chance(this.faults.dropP)) return; // the request is lost
    this.later(delay(), () =>
      this.sagas.handle(call, (o) => {
        this.log(`${call.participantId} answers ${call.op} #${call.callId}: ${o.outcome}${o.error ? ` (${o.error})` : ""}`);
        if (this.faultsOn && this.rng.chance(this.faults.dropP)) return; // the answer is lost
        this.later(delay(), () => deliver(o));
      }),
    );
  }

  // ---- network ---------------------------------------------------------------

  private send(from: SimNode, to: string, msg: PeerMessage): void {
    this.stats.messages++;
    const target = this.node(to);
    if (target === from) throw new Error("a message to the node itself is handled in the step that sends it");
    if (this.faultsOn && (this.cut(from.id, to) || this.rng.chance(this.faults.dropP))) {
      this.stats.dropped++;
      this.log(`net drop ${from.id}->${to} ${msg.t} ${msg.name}`);
      return;
    }
    const copies = this.faultsOn && this.rng.chance(this.faults.dupP) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const long = this.faultsOn && this.rng.chance(this.faults.longDelayP);
      const delay = 1 + this.rng.int(this.faults.delayMaxMs) + (long ? this.rng.int(1_000) : 0);
      this.later(delay, () => {
        if (!target.runtime || this.cut(from.id, to)) {
          this.stats.dropped++;
          return;
        }
        target.runtime.input({ k: "peer", msg, now: this.now });
      });
    }
  }

  private cut(a: string, b: string): boolean {
    return this.partition !== undefined && this.partition.has(a) !== this.partition.has(b);
  }

  // ---- client connections --------------------------------------------------

  openConn(nodeId: string): Conn {
    const sn = this.node(nodeId);
    const conn: Conn = { id: this.nextConn++, node: nodeId, epoch: sn.epoch, open: sn.node !== undefined, nextId: 0, pending: new Map(), lastIn: 0, lastOut: 0 };
    if (conn.open) this.conns.set(conn.id, conn);
    return conn;
  }

  call(conn: Conn, req: Request, cb: (a: Answer) => void): void {
    if (!conn.open) return this.later(1, () => cb({ lost: true }));
    const id = ++conn.nextId;
    conn.pending.set(id, cb);
    const sn = this.node(conn.node);
    conn.lastIn = Math.max(this.now + this.rng.int(3), conn.lastIn);
    this.queue.push(conn.lastIn, () => {
      // Bytes written before the client closed still arrive; a crash ends the stream.
      if (sn.runtime && sn.epoch === conn.epoch) sn.runtime.input({ k: "client", from: { conn: conn.id, id }, req: { ...req, id } as ClientInput, now: this.now });
    });
  }

  /** The client closes its connection: calls in flight are cut off, and the node hears of it after the requests already sent. */
  disconnect(conn: Conn): void {
    if (!conn.open) return;
    this.loseConn(conn);
    const sn = this.node(conn.node);
    this.queue.push(Math.max(this.now, conn.lastIn), () => {
      if (sn.runtime && sn.epoch === conn.epoch) sn.runtime.input({ k: "disconnect", conn: conn.id, now: this.now });
    });
  }

  private loseConn(conn: Conn): void {
    conn.open = false;
    this.conns.delete(conn.id);
    const cut = [...conn.pending.values()];
    conn.pending.clear();
    for (const cb of cut) this.later(0, () => cb({ lost: true }));
  }

  private reply(to: ReplyTo, body: ReplyBody): void {
    const conn = this.conns.get(to.conn);
    if (!conn) return; // closed by the client, or gone with a crash
    conn.lastOut = Math.max(this.now + this.rng.int(3), conn.lastOut);
    this.queue.push(conn.lastOut, () => {
      const cb = conn.pending.get(to.id);
      if (!cb || !conn.open) return;
      conn.pending.delete(to.id);
      const read = this.readVersions.get(`${conn.id}:${to.id}`);
      if (read !== undefined) {
        this.readVersions.delete(`${conn.id}:${to.id}`);
        this.checker.readAnswered(this.node(conn.node), read);
      }
      cb(body);
    });
  }

  // ---- faults ----------------------------------------------------------------

  private crash(sn: SimNode): void {
    if (!sn.node || !sn.runtime) return;
    this.stats.crashes++;
    this.log(`${sn.id} CRASH: loses ${sn.wal.pendingCount} unflushed appends and ${sn.runtime.unreleased} unreleased effect batches`);
    this.checker.onCrash(sn, sn.wal.unflushed());
    sn.runtime.stop();
    sn.runtime = undefined;
    sn.node = undefined;
    sn.epoch++;
    sn.flushScheduled = false;
    sn.inDoubtSince.clear();
    sn.wal.crash();
    for (const conn of [...this.conns.values()]) if (conn.node === sn.id) this.loseConn(conn);
    this.later(this.rng.int(downMaxMs), () => this.restart(sn));
  }

  private restart(sn: SimNode): void {
    if (sn.node) return;
    sn.boots++;
    // Branch ids embed the boot id, so it must differ across restarts of one node.
    const bootId = `${sn.boots.toString(36)}${this.rng.bootId()}`;
    const node = new Node({ id: sn.id, bootId, reader: sn.wal, ackWaitMs: this.ackWaitMs, evictAfterMs: this.evictAfterMs, random: () => this.rng.next() });
    sn.node = node;
    // Released effects go soon after, never within the step or the flush that released them.
    const schedule = (run: () => void) => this.later(this.rng.int(2), run);
    sn.runtime = new Runtime(this.engine(sn, node), sn.wal, this.io(sn), { now: () => this.now, schedule, broken: brokenPlan(this.opts.brokenRule) });
    this.log(`${sn.id} START boot ${bootId}`);
    sn.runtime.input({ k: "recover", ...sn.wal.unfinished(), now: this.now });
  }

  private tickLoop(sn: SimNode, delay: number): void {
    this.later(delay, () => {
      sn.runtime?.input({ k: "tick", now: this.now });
      this.tickLoop(sn, timing.tickMs);
    });
  }

  private startLoop(): void {
    this.later(this.rng.int(this.faults.txnGapMs), () => {
      if (!this.faultsOn) return;
      if (this.rng.chance(0.15)) this.bank.readOutside();
      else if (this.rng.chance(this.sagaShare)) this.sagas.start();
      else this.bank.start();
      this.startLoop();
    });
  }

  private crashLoop(delay: number): void {
    this.later(delay, () => {
      if (!this.faultsOn) return;
      const up = this.nodes.filter((sn) => sn.node);
      if (up.length) this.crash(this.rng.pick(up));
      this.crashLoop(this.rng.int(2 * this.faults.crashGapMs));
    });
  }

  private partitionLoop(delay: number): void {
    this.later(delay, () => {
      if (!this.faultsOn) return;
      if (this.partition) {
        this.partition = undefined;
        this.log("net partition healed");
      } else {
        const side = new Set(this.nodeIds.filter(() => this.rng.chance(0.5)));
        if (side.size === 0 || side.size === this.nodeIds.length) {
          side.clear();
          side.add(this.rng.pick(this.nodeIds));
        }
        this.partition = side;
        this.log(`net partition {${[...side]}} | rest`);
      }
      this.partitionLoop(this.rng.int(2 * this.faults.partitionGapMs));
    });
  }

  /** Faults stop: heal the network, restart every node, then everything must settle within the bound. */
  private endFaults(): void {
    this.faultsOn = false;
    this.partition = undefined;
    this.log("FAULTS END");
    for (const sn of this.nodes) this.restart(sn);
    this.settleLoop();
  }

  private settleLoop(): void {
    this.later(settleCheckMs, () => {
      const open = this.unsettled();
      if (open.length === 0) {
        this.checker.finalCheck();
        this.settled = this.now;
        return;
      }
      if (this.now - this.faultEnd >= settleBoundMs) {
        throw this.violation("8", `${settleBoundMs} ms after the faults stopped, still not final: ${open.slice(0, 6).join("; ")}`);
      }
      this.settleLoop();
    });
  }

  /** What is not yet final: transactions, branches, unflushed logs, client flows still waiting. */
  private unsettled(): string[] {
    const open: string[] = [];
    for (const sn of this.nodes) {
      const node = sn.node;
      if (!node) {
        open.push(`${sn.id} is down`);
        continue;
      }
      if (sn.wal.pendingCount || sn.runtime?.unreleased) open.push(`${sn.id} has unflushed appends or unreleased effects`);
      for (const c of node.coords.values()) if (!isTerminal(c.state)) open.push(`${sn.id} coordinates ${c.name} in state ${c.state}`);
      for (const b of node.branches.values()) {
        if (b.state !== "committed" && b.state !== "rolled_back") open.push(`${sn.id} holds branch ${b.id} of ${b.name} in state ${b.state}`);
        else if (!b.applied) open.push(`${sn.id} has not applied branch ${b.id} of ${b.name}`);
      }
      for (const o of node.orchestrator.orchs.values()) {
        if (o.executed && !isTerminal(o.state)) open.push(`${sn.id} orchestrates ${o.name} in state ${o.state}`);
      }
      const { coordinators, branches, orchestrations } = filterUnfinished(sn.wal.durableSummaries());
      for (const o of orchestrations) open.push(`${sn.id}'s durable log holds saga ${o.name} as ${o.state}`);
      for (const c of coordinators) open.push(`${sn.id}'s durable log holds ${c.name} as ${c.state}`);
      for (const b of branches) open.push(`${sn.id}'s durable log holds branch ${b.branch} of ${b.name} as ${b.state}`);
    }
    open.push(...this.bank.waiting(), ...this.sagas.waiting());
    return open;
  }
}
