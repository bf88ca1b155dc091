// What client/sql.ts (the branch protocol) asks of a database driver: one connection that holds one
// branch, and the result and helper shapes tx.sql gives the service on either kind of database.
// sql-postgres.ts (postgres.js) and sql-mysql.ts (mysql2) implement it, on Node.js and Bun alike.

/** The rows a query returned, with what the database said about it (as Bun.sql's results have). */
export type SqlResult<Row = Record<string, any>> = Row[] & {
  /** Rows returned, or rows written by a statement that returns none. */
  readonly count: number;
  /** Rows an INSERT, UPDATE, DELETE or MERGE wrote; 0 for a statement that writes nothing. */
  readonly affectedRows: number;
  /** MySQL: the first AUTO_INCREMENT value an INSERT generated (0 if none; a string above 2^53). PostgreSQL: null, use RETURNING. */
  readonly lastInsertRowid: number | string | null;
  /** PostgreSQL: the command tag ("INSERT", "PREPARE TRANSACTION", …). MySQL: null, its protocol has none. */
  readonly command: string | null;
};

export function sqlResult<Row>(rows: Row[], meta: { count: number; affectedRows: number; lastInsertRowid: number | string | null; command: string | null }): SqlResult<Row> {
  const r = rows as SqlResult<Row>;
  // Not enumerable, so printing, spreading or JSON.stringify of a result sees the rows only.
  for (const [k, value] of Object.entries(meta)) Object.defineProperty(r, k, { value, enumerable: false });
  return r;
}

/**
 * `tx.sql(db)(value, ...columns)`: a value the query renders by where it stands, as Bun.sql's and
 * postgres.js's helpers do: a row or rows after INSERT INTO t (columns and VALUES), a row after SET
 * (col = value, …), a list after IN, rows after VALUES, a name or names elsewhere (quoted identifiers).
 * `columns` picks and orders the columns of rows. Made before the branch's connection exists.
 */
export class SqlHelper {
  constructor(
    readonly value: unknown,
    readonly columns: readonly string[],
  ) {}
}

/** One database connection holding one branch, from BEGIN / XA START until it is given up. */
export interface SqlSession {
  begin(gid: string): Promise<void>;
  /** "rolled_back": the database rolled the transaction back instead (PostgreSQL, after a failed statement). */
  prepare(gid: string): Promise<"prepared" | "rolled_back">;
  /** Roll back a branch not yet prepared; may throw (the caller closes the connection anyway). */
  rollback(gid: string): Promise<void>;
  query(strings: TemplateStringsArray, values: unknown[]): Promise<SqlResult>;
  /** Text with the database's own placeholders ($1 for PostgreSQL, ? for MySQL). */
  unsafe(text: string, params?: readonly unknown[]): Promise<SqlResult>;
  /** Give the connection up: a PostgreSQL one with no transaction open goes back to the pool, anything else is closed. */
  end(): Promise<void>;
}

/** One driver's pool for one database URL. */
export interface SqlPool {
  reserve(): Promise<SqlSession>;
  close(): Promise<void>;
}

export interface SqlPoolOptions {
  /** Connections kept at most; a transaction holds one per database while its callback runs. */
  max: number;
  connectTimeoutS: number;
  idleTimeoutS: number;
  closeTimeoutS: number;
}
