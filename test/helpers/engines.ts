// Several sidecars' engines (Node) under the production Runtime over
// MemoryWals, with the network, the clock and the registered services in the
// test's hands: unit tests of what the engine does across sidecars. Peer
// messages go through the strict peer schema on the way, as the federation
// checks them; a message to a sidecar the world does not know comes back as
// "undeliverable", as the federation reports it.
import { expect } from "bun:test";
import type { CallOutcome } from "../../src/participants/outcome.ts";
import { ErrorCode } from "../../src/protocol/errors.ts";
import { type PeerMessage, peerMessage } from "../../src/protocol/messages.ts";
import { Runtime } from "../../src/runtime/runtime.ts";
import { Node } from "../../src/txn/node.ts";
import type { ClientInput, ReplyBody, ServiceInvoke } from "../../src/txn/types.ts";
import { MemoryWal } from "../../src/wal/memory-wal.ts";
import type { LogRecord } from "../../src/wal/records.ts";
import type { Request } from "../sim/simulator.ts";

/**
 * A MemoryWal whose reads show an append only once the test flushes it, as the sidecar's LmdbWal folds a
 * turn's appends into what it reads when it commits them, after the turn: steps of one turn do not see each
 * other's records.
 */
export class CommitReadWal extends MemoryWal {
  private held: LogRecord[][] = [];
  private position = 0;
  constructor() {
    super(false);
  }
  override write(records: LogRecord[]): number {
    this.held.push(records);
    return ++this.position;
  }
  override flush(): void {
    const held = this.held;
    this.held = [];
    for (const r of held) super.write(r);
    super.flush();
  }
}

export interface Invoke {
  node: string;
  invoke: ServiceInvoke;
  answered: boolean;
  answer(o: CallOutcome): void;
}

export interface InFlight {
  from: string;
  to: string;
  msg: PeerMessage;
}

interface Sidecar {
  node: Node;
  runtime: Runtime;
  wal: MemoryWal;
  boots: number;
}

export class Engines {
  now = 1_000;
  private readonly sidecars = new Map<string, Sidecar>();
  /** Sidecars the test plays itself: what is sent to them stays in `net` for the test to read. */
  private readonly raw = new Set<string>();
  private readonly scheduled: Array<() => void> = [];
  /** Peer messages sent and not delivered yet (all of them while `hold` is set). */
  readonly net: InFlight[] = [];
  /** Every peer message delivered, in order. */
  readonly delivered: InFlight[] = [];
  readonly invokes: Invoke[] = [];
  private readonly replies = new Map<number, ReplyBody>();
  private reqId = 0;
  /** Keep peer messages in `net` until the test delivers them. */
  hold = false;

  /**
   * A sidecar whose log is durable at every append; with "flushed", only when the test flushes it; with
   * "commit-reads", its reads too show an append only then (CommitReadWal).
   */
  add(id: string, log: "durable" | "flushed" | "commit-reads" = "durable"): this {
    const wal = log === "commit-reads" ? new CommitReadWal() : new MemoryWal(log === "durable");
    this.sidecars.set(id, { wal, boots: 0, ...this.boot(id, wal, 1) });
    return this;
  }

  /** A peer the test plays: it is linked, and the test reads what it is sent (`to(id)`) and speaks for it (`peer`). */
  addRaw(id: string): this {
    this.raw.add(id);
    return this;
  }

  /** Messages sent to the raw peer `id`, of kind `t`. */
  to<T extends PeerMessage["t"]>(id: string, t: T): Extract<PeerMessage, { t: T }>[] {
    return this.net.filter((m) => m.to === id && m.msg.t === t).map((m) => m.msg as Extract<PeerMessage, { t: T }>);
  }

  /** Raw peer `from` sends `msg` to `to`. */
  peer(from: string, to: string, msg: PeerMessage): void {
    this.net.push({ from, to, msg });
    this.deliver(this.net.length - 1);
  }

  node(id: string): Node {
    return this.sidecar(id).node;
  }

  wal(id: string): MemoryWal {
    return this.sidecar(id).wal;
  }

  /** A client request on connection 1 of `id`; its reply, once everything settled (undefined: none yet). */
  client(id: string, req: Request, conn = 1): ReplyBody | undefined {
    const reqId = ++this.reqId;
    this.sidecar(id).runtime.input({ k: "client", from: { conn, id: reqId }, req: { ...req, id: reqId } as ClientInput, now: this.now });
    this.settle();
    return this.replies.get(reqId);
  }

  /** Connection `conn` of sidecar `id` serves `service` (dtx.register). */
  register(id: string, service: string, conn = 7): void {
    this.sidecar(id).runtime.input({ k: "register", conn, service, now: this.now });
  }

  disconnect(id: string, conn = 7): void {
    this.sidecar(id).runtime.input({ k: "disconnect", conn, now: this.now });
    for (const i of this.invokes) if (i.node === id && i.invoke.conn === conn && !i.answered) i.answer({ outcome: "retry", error: "the service disconnected before it answered" });
    this.settle();
  }

  tick(ms: number): void {
    this.now += ms;
    for (const sc of this.sidecars.values()) sc.runtime.input({ k: "tick", now: this.now });
    this.settle();
  }

  /** kill -9: what the log made durable survives, memory does not; the sidecar comes back and recovers. */
  restart(id: string): void {
    const sc = this.sidecar(id);
    sc.runtime.stop();
    sc.wal.crash();
    for (const i of this.invokes) if (i.node === id) i.answered = true; // their answers go to a process that is gone
    Object.assign(sc, this.boot(id, sc.wal, ++sc.boots + 1));
    sc.runtime.input({ k: "recover", ...sc.wal.unfinished(), now: this.now });
    this.settle();
  }

  /** Carry out what the runtimes released, and deliver peer messages unless held, until nothing moves. */
  settle(): void {
    for (let guard = 0; guard < 10_000; guard++) {
      const run = this.scheduled.shift();
      if (run) {
        run();
        continue;
      }
      const next = this.hold ? -1 : this.net.findIndex((m) => !this.raw.has(m.to));
      if (next < 0) return;
      this.deliver(next);
    }
    throw new Error("the engines did not settle");
  }

  /** Deliver the message at `i` of `net` (again, with keep: a duplicate). */
  deliver(i: number, keep = false): void {
    const m = keep ? this.net[i] : this.net.splice(i, 1)[0];
    this.delivered.push(m);
    const parsed = peerMessage.safeParse(m.msg);
    if (!parsed.success) throw new Error(`an invalid peer message from ${m.from}: ${JSON.stringify(m.msg)}: ${parsed.error.message}`);
    this.sidecars.get(m.to)?.runtime.input({ k: "peer", msg: parsed.data, now: this.now });
    this.settle();
  }

  /** Invokes of `method` pushed to services on sidecar `id` and not answered yet. */
  pending(id: string, method?: string): Invoke[] {
    return this.invokes.filter((i) => i.node === id && !i.answered && (!method || i.invoke.method === method));
  }

  /** Answer the one pending invoke of `method` on `id`. */
  answer(id: string, method: string, o: CallOutcome = { outcome: "ok", result: null }): void {
    const open = this.pending(id, method);
    expect(open.length).toBe(1);
    open[0].answer(o);
    this.settle();
  }

  /** Each participant's logged operations on orchestrator `id`, as "op:outcome". */
  steps(id: string, name: string): string[][] | undefined {
    return this.wal(id).orchestration(name)?.done.map((d) => d.map((x) => `${x.op}:${x.outcome}`));
  }

  private sidecar(id: string): Sidecar {
    const sc = this.sidecars.get(id);
    if (!sc) throw new Error(`no sidecar ${id} in this world`);
    return sc;
  }

  private boot(id: string, wal: MemoryWal, boot: number): { node: Node; runtime: Runtime } {
    const node = new Node({ id, bootId: `b${boot}`, reader: wal, peers: [] });
    const runtime = new Runtime(
      node,
      wal,
      {
        sendPeer: (to, msg) => {
          if (!this.sidecars.has(to) && !this.raw.has(to)) return { code: ErrorCode.PARTICIPANT_UNAVAILABLE, reason: `sidecar ${to} is not a --peer of ${id} and has not connected to it` };
          this.net.push({ from: id, to, msg });
        },
        reply: (to, body) => void this.replies.set(to.id, body),
        call: () => {
          throw new Error("no HTTP participants in this world");
        },
        invoke: (invoke, done) => {
          const i: Invoke = {
            node: id,
            invoke,
            answered: false,
            answer: (o) => {
              if (i.answered) return;
              i.answered = true;
              done(o);
            },
          };
          this.invokes.push(i);
        },
        finishSql: () => {
          throw new Error("no SQL in this world");
        },
        onWalFailure: (err) => {
          throw err;
        },
      },
      { now: () => this.now, schedule: (run) => this.scheduled.push(run) },
    );
    return { node, runtime };
  }
}
