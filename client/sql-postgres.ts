// A PostgreSQL branch on postgres.js (DESIGN §5.3): BEGIN on a reserved connection, the service's
// statements, PREPARE TRANSACTION, and the connection back to the pool (nothing ties a prepared
// PostgreSQL transaction to its session; the pool closes a connection that is still in a transaction).
import postgres, { type ReservedSql } from "postgres";
import { pgGidLiteral } from "../src/protocol/sql-branch.ts";
import { SqlHelper, type SqlPool, type SqlPoolOptions, type SqlResult, type SqlSession, sqlResult } from "./sql-session.ts";

const writes = new Set(["INSERT", "UPDATE", "DELETE", "MERGE"]);

export function postgresPool(url: string, o: SqlPoolOptions): SqlPool {
  const sql = postgres(url, { max: o.max, connect_timeout: o.connectTimeoutS, idle_timeout: o.idleTimeoutS, onnotice: false });
  return {
    reserve: async () => session(await sql.reserve()),
    close: () => sql.end({ timeout: o.closeTimeoutS }),
  };
}

function session(c: ReservedSql): SqlSession {
  return {
    async begin() {
      await c.unsafe("BEGIN");
    },
    async prepare(gid) {
      const r = await c.unsafe(`PREPARE TRANSACTION ${pgGidLiteral(gid)}`);
      return r.command === "PREPARE TRANSACTION" ? "prepared" : "rolled_back"; // an aborted transaction answers ROLLBACK
    },
    async rollback() {
      await c.unsafe("ROLLBACK");
    },
    async query(strings, values) {
      const call = c as unknown as (s: TemplateStringsArray, ...v: unknown[]) => Promise<postgres.RowList<postgres.Row[]>>;
      const helper = c as unknown as (value: unknown, ...columns: string[]) => unknown;
      return result(await call(strings, ...values.map((v) => (v instanceof SqlHelper ? helper(v.value, ...v.columns) : v))));
    },
    async unsafe(text, params) {
      return result(await c.unsafe(text, params as postgres.ParameterOrJSON<never>[] | undefined));
    },
    async end() {
      c.release();
    },
  };
}

function result(r: postgres.RowList<postgres.Row[]>): SqlResult {
  const command = r.command ?? null;
  const count = r.count ?? r.length;
  return sqlResult([...r], { count, affectedRows: command && writes.has(command) ? count : 0, lastInsertRowid: null, command });
}
