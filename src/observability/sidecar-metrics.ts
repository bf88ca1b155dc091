// What /metrics reports, derived from what the runtime sees: client requests
// going in and log records becoming durable. Gauges are read at scrape time.
import { carriedOp } from "../protocol/messages.ts";
import type { Input } from "../txn/types.ts";
import type { LogRecord } from "../wal/records.ts";
import { batchBuckets, constLabels, Metrics } from "./metrics.ts";

const phase = {
  prepare: constLabels({ phase: "prepare" }),
  awaitDecision: constLabels({ phase: "await_decision" }),
  commit: constLabels({ phase: "commit" }),
  total: constLabels({ phase: "total" }),
};
const begunDistributed = constLabels({ protocol: "2pc", kind: "distributed" });
const finished = {
  committed: { "2pc": constLabels({ outcome: "committed", protocol: "2pc" }), saga: constLabels({ outcome: "committed", protocol: "saga" }) },
  rolled_back: { "2pc": constLabels({ outcome: "rolled_back", protocol: "2pc" }), saga: constLabels({ outcome: "rolled_back", protocol: "saga" }) },
};

export interface GaugeSources {
  clientConnections(): number;
  inDoubtBranches(): number;
  transactionsByState(): Record<string, number>;
  peerLinks(): Record<string, number>;
}

export class SidecarMetrics {
  readonly m = new Metrics();
  private phases = new Map<string, { createdAt: number; preparedAt?: number; decidedAt?: number }>();
  private requestsByOp: Record<string, number> = {};

  constructor(sources: GaugeSources) {
    this.m.gauge("dtx_client_connections", "Client connections open on the Unix socket.", () => sources.clientConnections());
    this.m.gauge("dtx_in_doubt_branches", "Branches prepared here (2PC branches and hosted orchestrated prepares) waiting for their coordinator's decision.", () => sources.inDoubtBranches());
    this.m.gauge("dtx_transactions", "Transactions this sidecar coordinates that are in memory, by state (failed ones need an operator).", () => sources.transactionsByState());
    this.m.gauge("dtx_peer_link_up", "1 when the authenticated link to a peer sidecar is up.", () => sources.peerLinks(), "peer");
    this.m.counterFrom("dtx_client_requests_total", "Client requests, by op.", () => this.requestsByOp, "op");
  }

  /** A client request or peer message handed to the engine. */
  input(input: Input): void {
    if (input.k === "peer" && input.msg.t === "o_result") {
      const m = input.msg;
      this.m.counter("dtx_participant_results_total", "Answers from the sidecars hosting orchestrated participants (this one too), by sidecar, operation and outcome.", { sidecar: m.from, op: m.op, outcome: m.outcome });
    }
    if (input.k !== "client") return;
    const op = input.req.op;
    // A callback that only wrote is begun by its prepare (client/index.ts).
    if (op === "begin" || carriedOp(input.req) === "begin") this.m.counter("dtx_transactions_begun_total", "Transactions begun, by protocol and kind.", begunDistributed);
    if (op === "o_execute") this.m.counter("dtx_orchestrations_executed_total", "Orchestrated transactions executed (protocol chosen at execute).", {});
    this.requestsByOp[op] = (this.requestsByOp[op] ?? 0) + 1;
  }

  /** Records that were appended (they are durable when the append resolves). */
  records(records: LogRecord[]): void {
    for (const rec of records) {
      switch (rec.r) {
        case "c.prepared":
          this.phases.set(rec.name, { createdAt: rec.createdAt, preparedAt: rec.at });
          this.m.observe("dtx_phase_ms", "Time spent per phase of a transaction, in milliseconds.", rec.at - rec.createdAt, phase.prepare);
          break;
        case "c.decision": {
          const p = this.phases.get(rec.name);
          if (p) p.decidedAt = rec.at;
          if (p?.preparedAt) this.m.observe("dtx_phase_ms", "Time spent per phase of a transaction, in milliseconds.", rec.at - p.preparedAt, phase.awaitDecision);
          break;
        }
        case "c.end": {
          const p = this.phases.get(rec.name);
          this.phases.delete(rec.name);
          const outcome = rec.outcome === "commit" ? "committed" : "rolled_back";
          this.m.counter("dtx_transactions_finished_total", "Transactions finished, by outcome and protocol.", finished[outcome][rec.protocol]);
          if (p?.decidedAt) this.m.observe("dtx_phase_ms", "Time spent per phase of a transaction, in milliseconds.", rec.at - p.decidedAt, phase.commit);
          this.m.observe("dtx_phase_ms", "Time spent per phase of a transaction, in milliseconds.", rec.at - rec.createdAt, phase.total);
          break;
        }
        case "o.begin":
          this.m.counter("dtx_transactions_begun_total", "Transactions begun, by protocol and kind.", { protocol: rec.protocol, kind: "orchestrated" });
          break;
        case "o.end":
          this.m.counter("dtx_transactions_finished_total", "Transactions finished, by outcome and protocol.", { outcome: rec.state, protocol: "orchestrated" });
          break;
        case "o.step":
          if (rec.op === "compensate") this.m.counter("dtx_compensations_total", "Saga compensations run.", { outcome: rec.outcome });
          break;
        case "b.op":
          if (rec.hosted) this.m.counter("dtx_hosted_operations_total", "Operations this sidecar's barrier logged for orchestrated participants it hosts, by orchestrating sidecar, operation and outcome.", { orchestrator: rec.hosted.orchestrator, op: rec.op, outcome: rec.outcome });
          break;
      }
    }
  }

  /** One WAL flush (fsync): how long it took, and how many appends it made durable. */
  flush(ms: number, appends: number): void {
    this.m.observe("dtx_wal_fsync_ms", "WAL flush (fsync) latency in milliseconds.", ms);
    this.m.observe("dtx_wal_batch_appends", "Appends made durable by one flush (group commit).", appends, undefined, batchBuckets);
  }

  render(): string {
    return this.m.render();
  }
}
