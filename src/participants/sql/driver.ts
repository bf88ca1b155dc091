// What the sidecar does in one database: finish a prepared branch from its
// own connection, and list the prepared branches there. One interface, one
// implementation per kind (PostgreSQL, MySQL/MariaDB XA), one shared test suite.
import type { Outcome } from "../../wal/records.ts";
import type { SqlDatabase } from "./databases.ts";

/**
 * finished: the statement succeeded. unknown: the database holds no prepared
 * branch with this gid. busy: it does, but cannot finish it now (MariaDB: the
 * preparing connection has not closed yet); try again shortly.
 */
export type FinishResult = "finished" | "unknown" | "busy";

export interface SqlDriver {
  readonly db: SqlDatabase;
  /** Reach the server and check that it can prepare transactions; throws a DtxError with a SQL_* code. */
  probe(): Promise<void>;
  /** Every dtx gid prepared in this database (PostgreSQL) or server (XA), whoever owns it. */
  listPrepared(): Promise<string[]>;
  finish(gid: string, outcome: Outcome): Promise<FinishResult>;
  close(): Promise<void>;
}

/** Connections the sidecar keeps per database: finishing and recovery are light. */
export const sidecarPoolMax = 2;
export const connectTimeoutS = 5;
