// The engine's in-memory state: a coordinator (Coord) for every transaction this
// node coordinates, a Branch for every branch that lives on this node.
import type { TxnState } from "../protocol/messages.ts";
import type { Outcome, Protocol, SqlResourceRef } from "../wal/records.ts";
import type { ClientInput, ReplyTo } from "./types.ts";

export type Vote = "yes" | "no" | "readonly";

export interface CoordBranch {
  id: string;
  sidecar: string;
  vote?: Vote;
  acked: boolean;
}

export interface Coord {
  name: string;
  protocol: Protocol;
  state: TxnState;
  branches: Map<string, CoordBranch>;
  createdAt: number;
  deadline: number;
  timeoutMs: number;
  preparedAt?: number;
  decidedAt?: number;
  finishedAt?: number;
  preparedTimeoutMs?: number;
  traceparent?: string;
  owner?: number;
  /** The branch begin opened on this node; prepare ends only it (a joined branch ends itself with "end"). */
  ownBranch?: string;
  /** c.prepared is in the log: from here on a rollback must be logged before it is announced. */
  durablePrepared: boolean;
  outcome?: Outcome;
  reason?: string;
  participant?: string;
  conflict?: boolean;
  prepareWaiter?: ReplyTo;
  /** Clients waiting for the decision's acks; answered with `pending` once they waited ackWaitMs. */
  decideWaiters: { to: ReplyTo; since: number }[];
  lastResend: number;
}

export type BranchState = "joining" | "active" | "done" | "prepared" | "committed" | "rolled_back";

export interface Branch {
  name: string;
  id: string;
  coordinator: string;
  state: BranchState;
  reads: Map<string, number>;
  writes: Map<string, { value: unknown; deleted: boolean }>;
  owner?: number;
  joinWaiter?: ReplyTo;
  pendingPrepare: boolean;
  deadline: number;
  lastContact: number;
  locked: string[];
  ops: number;
  finishedAt?: number;
  applied: boolean;
  traceparent?: string;
  /** The incarnation named by the token this branch joined with. */
  incarnation?: string;
  /** When its client asked to join (0 for begin's own branch). */
  joinedAt: number;
  /** Its enlist was refused as unknown once and sent again at once (see onEnlisted). */
  enlistRepeated?: boolean;
  /** An end that carried its join: run once the coordinator has enlisted the branch (joinWaiter is its from). */
  pendingEnd?: Extract<ClientInput, { op: "end" }>;
  /** Databases this branch runs SQL in; it votes yes only once every one reported prepared. */
  resources: (SqlResourceRef & { prepared: boolean })[];
  /** Its decision's SQL work is not finished yet: the ack waits for it (DESIGN §5.3, "decided means done"). */
  sqlUnfinished?: boolean;
  /** The coordinator whose decision this branch owes an ack once its SQL work is finished. */
  ackOwed?: string;
  vote?: Vote;
  preparedAt?: number;
  /** Why it rolled back, when it knows (its own no vote). */
  reason?: string;
}
