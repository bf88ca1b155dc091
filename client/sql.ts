// SQL branches, client side (DESIGN §5.3). `tx.sql("orders")` runs the
// service's own SQL inside the transaction, on a connection of its own:
//   1. first use: the sidecar logs the branch and answers its gid and URL;
//      we reserve one connection and BEGIN (PostgreSQL) or XA START (MySQL);
//   2. the callback's statements run on that connection;
//   3. when the callback ends: PREPARE TRANSACTION / XA END + XA PREPARE,
//      close the connection (MariaDB ties a prepared XA branch to it), and
//      report the branch prepared to the sidecar;
//   4. the sidecar commits or rolls it back after the decision, from its own
//      connection, and reconciles after crashes.
// A reserved connection, not a pool: a pool would silently reconnect after a
// dropped connection and run the rest of the callback outside the transaction.
// PostgreSQL connections go back to the client's pool after PREPARE TRANSACTION
// (nothing ties the prepared branch to them); MySQL ones are closed. The drivers
// are postgres.js and mysql2, on Node.js and on Bun alike, loaded on first use
// (sql-postgres.ts, sql-mysql.ts); this file is the branch protocol, written once.
import { ErrorCode } from "../src/protocol/errors.ts";
import { type SqlKind, preparedDisabledMessage, redactUrl, sqlErrorCode } from "../src/protocol/sql-branch.ts";
import { DtxClientError, ProtocolError, SqlError } from "./errors.ts";
import { SqlHelper, type SqlPool, type SqlPoolOptions, type SqlResult, type SqlSession } from "./sql-session.ts";

export { SqlHelper, type SqlResult };

/** A Bun.sql-style handle bound to one database branch of a transaction. */
export interface SqlHandle {
  /** A query: ``await tx.sql("orders")`INSERT INTO orders VALUES (${id})` ``; values are sent as parameters (PostgreSQL) or escaped literals (MySQL). */
  <Row = Record<string, any>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<SqlResult<Row>>;
  /** A helper inside a query: sql(row) or sql(rows, "id", "qty") after INSERT INTO t, sql(row) after SET, sql(list) after IN, sql("name") for an identifier. */
  (value: object | string, ...columns: string[]): SqlHelper;
  /** A query given as text with the database's own placeholders, $1 (PostgreSQL) or ? (MySQL); never put user input in `text`. */
  unsafe<Row = Record<string, any>>(text: string, params?: readonly unknown[]): Promise<SqlResult<Row>>;
  /** Which kind of database this is; opens the branch if no query has yet. */
  kind(): Promise<SqlKind>;
}

export interface SqlOpened {
  url: string;
  gid: string;
  kind: SqlKind;
}

interface Branch {
  db: string;
  state: "opening" | "open" | "failed" | "prepared" | "rolled_back";
  opening: Promise<SqlSession>;
  gid?: string;
  kind?: SqlKind;
  url?: string;
  conn?: SqlSession;
}

const poolOptions: SqlPoolOptions = {
  /** Connections one client keeps per database URL; a transaction holds one per database while its callback runs. */
  max: 64,
  connectTimeoutS: 5,
  idleTimeoutS: 30,
  closeTimeoutS: 5,
};

/** One client's connection pools, one per database URL. */
export class SqlPools {
  private readonly pools = new Map<string, Promise<SqlPool>>();

  async reserve(url: string, kind: SqlKind): Promise<SqlSession> {
    let pool = this.pools.get(url);
    if (!pool) {
      // Loaded on first use: a service that never runs SQL loads neither driver.
      pool = kind === "postgres" ? import("./sql-postgres.ts").then((m) => m.postgresPool(url, poolOptions)) : import("./sql-mysql.ts").then((m) => m.mysqlPool(url, poolOptions));
      this.pools.set(url, pool);
    }
    return (await pool).reserve();
  }

  async close(): Promise<void> {
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map(async (p) => (await p).close().catch(() => {})));
  }
}

/** The SQL branches of one transaction branch (one Tx). */
export class TxSql {
  private readonly branches = new Map<string, Branch>();

  constructor(
    private readonly txName: string,
    /** Asks the sidecar to log a branch in `db` (rejects once the callback has returned). */
    private readonly open: (db: string) => Promise<SqlOpened>,
    /** Tells the sidecar the branch in `db` is prepared. */
    private readonly report: (db: string, gid: string) => Promise<void>,
    private readonly running: () => boolean,
    private readonly pools: SqlPools,
  ) {}

  handle(db: string): SqlHandle {
    const h = ((first: unknown, ...rest: unknown[]) => {
      if (!isTemplate(first)) return new SqlHelper(first, rest as string[]);
      return this.query(db, (c) => c.query(first, rest));
    }) as SqlHandle;
    h.unsafe = (text, params) => this.query(db, (c) => c.unsafe(text, params)) as Promise<SqlResult<any>>;
    h.kind = () => this.query(db, async () => this.branches.get(db)?.kind as SqlKind);
    return h;
  }

  private query<T>(db: string, run: (c: SqlSession) => Promise<T>): Promise<T> {
    if (!this.running()) {
      return Promise.reject(new ProtocolError("INVALID_STATE", `transaction ${this.txName}: tx.sql("${db}") after its callback returned; use it only inside the callback`));
    }
    const b = this.branch(db);
    if (b.conn && b.state === "open") return run(b.conn);
    return b.opening.then(run);
  }

  private branch(db: string): Branch {
    let b = this.branches.get(db);
    if (!b) {
      const fresh: Branch = { db, state: "opening", opening: Promise.resolve() as unknown as Promise<SqlSession> };
      fresh.opening = this.connect(fresh);
      fresh.opening.catch(() => {}); // the caller's query sees the error; prepareAll reports it again
      this.branches.set(db, fresh);
      b = fresh;
    }
    return b;
  }

  private async connect(b: Branch): Promise<SqlSession> {
    let opened: SqlOpened;
    try {
      opened = await this.open(b.db);
    } catch (err) {
      b.state = "failed";
      throw err;
    }
    b.gid = opened.gid;
    b.kind = opened.kind;
    b.url = opened.url;
    try {
      const conn = await this.pools.reserve(opened.url, opened.kind);
      b.conn = conn;
      await conn.begin(opened.gid);
      b.state = "open";
      return conn;
    } catch (err) {
      b.state = "failed";
      await this.close(b);
      throw sqlError(b, err, "open");
    }
  }

  /** Prepare every branch, close its connection and report it. Rejects with the first failure. */
  async prepareAll(): Promise<void> {
    if (this.branches.size === 0) return; // the common case: the callback used no database
    const settled = await Promise.allSettled([...this.branches.values()].map((b) => this.prepareOne(b)));
    const failed = settled.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  private async prepareOne(b: Branch): Promise<void> {
    await b.opening.catch(() => {});
    if (b.state !== "open" || !b.conn || !b.gid) {
      throw new SqlError(ErrorCode.SQL_PREPARE_FAILED, `database "${b.db}": its SQL branch could not be opened, so the transaction cannot be prepared`, b.db);
    }
    try {
      if ((await b.conn.prepare(b.gid)) === "rolled_back") {
        throw new SqlError(
          ErrorCode.SQL_PREPARE_FAILED,
          `database "${b.db}" rolled its transaction back instead of preparing it: a statement in it failed (PostgreSQL aborts the whole transaction then, even if the error was caught), or the callback ended the transaction itself`,
          b.db,
        );
      }
    } catch (err) {
      b.state = "failed";
      await this.rollbackOne(b);
      throw sqlError(b, err, "prepare");
    }
    b.state = "prepared";
    await this.close(b); // MariaDB finishes a prepared XA branch elsewhere only once this connection closed
    await this.report(b.db, b.gid);
  }

  /** Roll back every branch not yet prepared and close every connection; prepared ones the sidecar rolls back. */
  async rollbackAll(): Promise<void> {
    if (this.branches.size === 0) return;
    await Promise.all([...this.branches.values()].map((b) => this.rollbackOne(b)));
  }

  private async rollbackOne(b: Branch): Promise<void> {
    await b.opening.catch(() => {});
    if (b.conn && b.gid && (b.state === "open" || b.state === "failed")) {
      // Closing the connection rolls back an unprepared transaction anyway.
      await b.conn.rollback(b.gid).catch(() => {});
    }
    if (b.state !== "prepared") b.state = "rolled_back";
    await this.close(b);
  }

  private async close(b: Branch): Promise<void> {
    const c = b.conn;
    b.conn = undefined;
    if (c) await c.end().catch(() => {});
  }
}

function isTemplate(v: unknown): v is TemplateStringsArray {
  return Array.isArray(v) && Array.isArray((v as unknown as { raw?: unknown }).raw);
}

/** A database error as the SqlError with the stable code it maps to; other errors pass through. */
function sqlError(b: Branch, err: unknown, phase: "open" | "prepare"): unknown {
  if (err instanceof DtxClientError) return err;
  const kind = b.kind ?? "postgres";
  const message = err instanceof Error ? err.message : String(err);
  switch (sqlErrorCode(kind, err)) {
    case ErrorCode.SQL_PREPARED_DISABLED:
      return new SqlError(ErrorCode.SQL_PREPARED_DISABLED, preparedDisabledMessage(b.db), b.db, false, { cause: err });
    case ErrorCode.SQL_CONNECTION_FAILED:
      return new SqlError(ErrorCode.SQL_CONNECTION_FAILED, `cannot reach database "${b.db}" at ${redactUrl(b.url ?? "")}: ${message}`, b.db, true, { cause: err });
    case ErrorCode.SQL_GID_DUPLICATE:
      return new SqlError(ErrorCode.SQL_GID_DUPLICATE, `database "${b.db}" already holds a transaction with gid ${b.gid}: ${message}`, b.db, false, { cause: err });
  }
  if (phase === "prepare") return new SqlError(ErrorCode.SQL_PREPARE_FAILED, `database "${b.db}" refused to prepare the transaction: ${message}`, b.db, false, { cause: err });
  return err;
}
