// One sidecar's transaction engine as a deterministic state machine.
// step(input) -> effects; no I/O, no clock, no randomness (DESIGN §2).
// The same Node runs inside the sidecar runtime and inside the simulator.
//
// Roles: for every transaction this node coordinates there is a Coord
// (coordinator.ts); for every branch of any transaction that lives on this node
// there is a Branch (participant.ts). A coordinator talks to its branches only by
// messages, also to the branch on its own node, so a single sidecar and a
// federation run the same code. This file holds the shared state (engine.ts) and
// routes every input to its role; the roles are functions over that state.
import { decodeToken } from "../protocol/token.ts";
import type { PeerMessage } from "../protocol/messages.ts";
import type { Orchestrator } from "./orchestrator.ts";
import { abort, begin, decide, onAck, onEnlist, onQuery, onVote, prepare, tickCoord } from "./coordinator.ts";
import { expireParkedEnlists } from "./early-enlist.ts";
import { Engine, type NodeOptions } from "./engine.ts";
import { acceptForwarded, expireForwarded, onDecided } from "./forwarding.ts";
import { nameHeld, nameInUse } from "./names.ts";
import { end, get, join, onApplied, onDecision, onEnlisted, onPrepare, tickBranch, voteNo, write } from "./participant.ts";
import { onRecover } from "./recovery.ts";
import { onSqlFinished, sqlOpen, sqlPrepared } from "./sql-resources.ts";
import type { Branch, Coord } from "./state.ts";
import type { ClientInput, Effect, Input, ReplyTo } from "./types.ts";
import { branchLive, inDoubtBranches, list, status, transactionsByState, unknownTransaction } from "./views.ts";

export type { NodeOptions } from "./engine.ts";

export class Node {
  readonly id: string;
  /** The transactions this node coordinates, by name (finished ones until evictAfterMs). */
  readonly coords: ReadonlyMap<string, Coord>;
  /** The branches that live on this node, by "<name>/<branch id>". */
  readonly branches: ReadonlyMap<string, Branch>;
  readonly orchestrator: Orchestrator;
  private readonly e: Engine;

  constructor(opts: NodeOptions) {
    this.e = new Engine(opts);
    this.id = this.e.id;
    this.coords = this.e.coords;
    this.branches = this.e.branches;
    this.orchestrator = this.e.orchestrator;
  }

  step(input: Input): Effect[] {
    this.e.out = [];
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
        onRecover(this.e, input.coordinators, input.branches, input.now, input.orchestrations, input.hosted);
        break;
      case "applied":
        onApplied(this.e, input.name, input.branch);
        break;
      case "sql_finished":
        onSqlFinished(this.e, input.name, input.branch, input.ok);
        break;
      case "call_result":
        this.e.orchestrator.onResult(input, input.now);
        break;
      case "register":
        this.e.hosted.register(input.conn, input.service);
        break;
      case "invoked":
        this.e.hosted.onInvoked(input.id, input, input.now);
        break;
      case "hosted_durable":
        this.e.hosted.onDurable(input.key);
        break;
      case "undeliverable":
        if (input.msg.t === "o_call") this.e.orchestrator.onUndeliverable(input.msg, input.code, input.reason, input.now);
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${JSON.stringify(never)}`);
      }
    }
    return this.e.out;
  }

  // ---- views -----------------------------------------------------------------

  /** The W3C traceparent a transaction was begun (or joined) with, for messages and log lines. */
  traceOf(name: string): string | undefined {
    return this.e.traces.get(name);
  }
  /** A branch of `name` with this id is in memory and not finished. */
  branchLive(name: string, branch: string): boolean {
    return branchLive(this.e, name, branch);
  }
  /** Branches that voted yes and wait for their coordinator's decision. */
  inDoubtBranches(): number {
    return inDoubtBranches(this.e);
  }
  /** Transactions in memory by state, coordinated and orchestrated. */
  transactionsByState(): Record<string, number> {
    return transactionsByState(this.e);
  }

  // ---- routing ---------------------------------------------------------------

  private onClient(req: ClientInput, from: ReplyTo, now: number) {
    const e = this.e;
    switch (req.op) {
      case "begin":
        return begin(e, req, from, now);
      case "join":
        return void join(e, decodeToken(req.token), from, now, req.branch);
      case "get":
        return get(e, req, from);
      case "put":
      case "delete":
        return write(e, req, from);
      case "prepare":
        return prepare(e, req, from, now);
      case "end":
        return end(e, req, from, now);
      case "commit":
        return decide(e, req.name, "commit", from, now);
      case "rollback":
        return decide(e, req.name, "rollback", from, now, req.reason, req.branch);
      case "status": {
        const view = status(e, req.name);
        return view ? e.ok(from, view) : e.fail(from, unknownTransaction(e, req.name));
      }
      case "sql_open":
        return sqlOpen(e, req, from, now);
      case "sql_prepared":
        return sqlPrepared(e, req, from);
      case "list":
        return e.ok(from, { transactions: list(e, req.state, req.limit) });
      case "o_create": {
        const held = nameHeld(e, req.name);
        if (held) return e.fail(from, nameInUse(held));
        // The seed's requirements (timeout in seconds) and the flat options are one thing inside (the schema refuses both).
        const { requirements: r, ...flat } = req;
        const timeoutMs = r?.timeout === undefined ? undefined : Math.round(r.timeout * 1000);
        return e.orchestrator.create(r ? { ...flat, consistency: r.consistency, availability: r.availability, timeoutMs } : flat, from, now);
      }
      case "o_add":
        return e.orchestrator.add(req.name, req.participant, from);
      case "o_execute":
        return e.orchestrator.execute(req.name, from, now);
      case "o_abort":
        return e.orchestrator.abort(req.name, from, now, req.reason);
      case "recover":
        return e.ok(from, { resumed: e.orchestrator.kick(now) });
      case "resolve":
        if (e.orchestrator.resolve(req.name, req.outcome, from, now)) return;
        return decide(e, req.name, req.outcome, from, now, "resolved by an operator");
      default: {
        const never: never = req;
        throw new Error(`unknown op ${JSON.stringify(never)}`);
      }
    }
  }

  private onPeer(msg: PeerMessage, now: number) {
    const e = this.e;
    switch (msg.t) {
      case "enlist":
        return onEnlist(e, msg, now);
      case "enlisted":
      case "enlist_refused":
        return onEnlisted(e, msg, now);
      case "prepare":
        return onPrepare(e, msg, now);
      case "vote":
        return onVote(e, msg, now);
      case "decision":
        return onDecision(e, msg, now);
      case "ack":
        return onAck(e, msg, now);
      case "query":
        return onQuery(e, msg);
      case "decide":
        return decide(e, msg.name, msg.outcome, acceptForwarded(e, msg), now);
      case "decided":
        return onDecided(e, msg);
      case "o_call":
        return e.hosted.onCall(msg, now);
      case "o_result":
        return e.orchestrator.onHostedResult(msg, now);
      case "o_query":
        return e.orchestrator.onQuery(msg);
      case "o_decision":
        return e.hosted.onDecision(msg, now);
      default: {
        const never: never = msg;
        throw new Error(`unknown peer message ${JSON.stringify(never)}`);
      }
    }
  }

  private onTick(now: number) {
    const e = this.e;
    expireForwarded(e, now);
    e.orchestrator.tick(now);
    e.hosted.tick(now);
    e.evictRetired(now);
    if (e.parkedCount) expireParkedEnlists(e, now);
    for (const c of e.liveCoords) tickCoord(e, c, now);
    for (const b of e.liveBranches) tickBranch(e, b, now);
  }

  private onDisconnect(conn: number, now: number) {
    const e = this.e;
    e.hosted.disconnected(conn);
    for (const c of e.liveCoords) {
      if (c.owner === conn && (c.state === "active" || c.state === "preparing")) {
        abort(e, c, "the client disconnected before the transaction was prepared", undefined, false, now);
      }
    }
    for (const b of e.liveBranches) {
      if (b.owner !== conn) continue;
      if (b.state === "joining" || b.state === "active") voteNo(e, b, `the client of branch ${b.id} disconnected`, false, now);
    }
  }
}
