// The dtx client: what a service calls, one short method per request. No transaction logic lives here;
// every decision is the sidecar's. connection.ts speaks the wire, transaction.ts runs a branch's
// callback, callbacks.ts serves registered services, sql.ts runs tx.sql.
import type { z } from "zod";
import { createOptionsSchema, listOptionsSchema, serviceName, txnName } from "../src/protocol/messages.ts";
import { orchestratedValueRefusal, participantSpec } from "../src/protocol/orchestration.ts";
import type { ReplyOf } from "../src/protocol/replies.ts";
import { type CallbackCall, type ServiceHandlers, Services } from "./callbacks.ts";
import { checked, checkKey, encodedBytes, refusalError, unknownKeys } from "./checks.ts";
import { type Args, type ConnectOptions, connection } from "./connection.ts";
import { SqlPools } from "./sql.ts";
import { type BeginOptions, beginDistributed, join, type Tx } from "./transaction.ts";

export * from "./errors.ts";
export type { SqlHandle, SqlHelper, SqlResult } from "./sql.ts";
export type { BeginOptions, CallbackCall, ConnectOptions, ServiceHandlers, Tx };

export type Protocol = PrepareResult["protocol"];
export type ListOptions = Args<"list">;
export type CreateOptions = Omit<Args<"o_create">, "name">;
/** What addParticipant takes: defaults (supports2pc, supportsSaga, retryPolicy) may be left out. */
export type ParticipantOptions = z.input<typeof participantSpec>;
// The results are the replies' own types (src/protocol/replies.ts), read with their schemas.
export type PrepareResult = ReplyOf<"prepare">;
export type CommitResult = ReplyOf<"commit">;
export type RollbackResult = ReplyOf<"rollback">;
export type StatusResult = ReplyOf<"status">;
export type TransactionSummary = ReplyOf<"list">["transactions"][number];
/**
 * What execute and abort answer. Each participant row names the `sidecar` it lives on; a step whose participant
 * could not be reached carries a `code`: PARTICIPANT_UNAVAILABLE (its sidecar is not a peer, or its service is
 * not registered there) or PEER_UNREACHABLE (no link to its sidecar was up).
 */
export type ExecuteResult = ReplyOf<"o_execute">;
export type ResolveResult = ReplyOf<"resolve">;
export type PeerInfo = ReplyOf<"peers">["peers"][number];

/** An orchestrated transaction: requirements pick 2PC or Saga at execute. */
export interface OrchestratedTransaction {
  readonly name: string;
  addParticipant(p: ParticipantOptions): Promise<void>;
  execute(): Promise<ExecuteResult>;
  getStatus(): Promise<StatusResult>;
  abort(): Promise<ExecuteResult>;
}

export interface Client {
  createTransaction(opts: { name: string } & CreateOptions): Promise<OrchestratedTransaction>;
  /** Serve calls for participants with endpoint `service:<service>` on this sidecar, or `service:<service>@<this sidecar's id>` from another's orchestrated transactions. */
  register(service: string, handlers: ServiceHandlers): Promise<void>;
  /** This sidecar's links to its peers: id, url, state, since, counters. */
  peers(): Promise<PeerInfo[]>;
  /** Retry every unfinished orchestrated transaction now; returns their names. */
  recover(): Promise<string[]>;
  /** Operator: decide a prepared transaction, or close a failed one. Refuses to contradict a durable decision. */
  resolve(name: string, outcome: "commit" | "rollback"): Promise<ResolveResult>;
  beginDistributed(name: string, fn: (tx: Tx) => unknown, opts?: BeginOptions): Promise<PrepareResult>;
  join<T>(token: string, fn: (tx: Tx) => T | Promise<T>): Promise<T>;
  commitDistributed(name: string): Promise<CommitResult>;
  rollbackDistributed(name: string): Promise<RollbackResult>;
  status(name: string): Promise<StatusResult>;
  list(opts?: ListOptions): Promise<TransactionSummary[]>;
  /** The committed value of `key` in this sidecar's store, outside any transaction. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  close(): void;
}

export async function connect(opts: ConnectOptions = {}): Promise<Client> {
  unknownKeys(opts, ["socket", "reconnect", "connectTimeoutMs"], "connect options");
  const services = new Services();
  const link = connection(opts, { callback: (c, frame) => void services.serve(c, frame), opened: (c) => services.registerAll(c), serving: () => services.serving });
  const { call } = link;
  const pools = new SqlPools(); // tx.sql connections, per database URL
  await link.ready();

  return {
    async createTransaction({ name, ...opts }) {
      checked(txnName, name, "createTransaction name");
      checked(createOptionsSchema, opts, "createTransaction");
      const refused = orchestratedValueRefusal({ op: "o_create", name, context: opts.context }, encodedBytes);
      if (refused) throw refusalError(refused);
      await call("o_create", { ...opts, name });
      return {
        name,
        async addParticipant(participant) {
          checked(participantSpec, participant, "addParticipant");
          const refused = orchestratedValueRefusal({ op: "o_add", participant }, encodedBytes);
          if (refused) throw refusalError(refused);
          await call("o_add", { name, participant: participant as Args<"o_add">["participant"] });
        },
        execute: () => call("o_execute", { name }),
        getStatus: () => call("status", { name }),
        abort: () => call("o_abort", { name }),
      };
    },
    async register(service, handlers) {
      // Refused here, before it is served: every redial registers each service again.
      checked(serviceName, service, "register service");
      services.add(service, handlers);
      await call("register", { service });
    },
    peers: async () => (await call("peers", {})).peers,
    recover: async () => (await call("recover", {})).resumed,
    resolve: (name, outcome) => call("resolve", { name, outcome }),
    beginDistributed: (name, fn, opts = {}) => beginDistributed(link, pools, name, fn, opts),
    join: (token, fn) => join(link, pools, token, fn),
    commitDistributed: (name) => call("commit", { name }),
    rollbackDistributed: (name) => call("rollback", { name }),
    status: (name) => call("status", { name }),
    async list(opts = {}) {
      checked(listOptionsSchema, opts, "list options");
      return (await call("list", opts)).transactions;
    },
    async get<T>(key: string) {
      checkKey("dtx.get", key);
      const r = await call("get", { key });
      return r.found ? (r.value as T) : undefined;
    },
    close() {
      void pools.close();
      link.close();
    },
  };
}
