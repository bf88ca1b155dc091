// A MySQL/MariaDB branch on mysql2 (DESIGN §5.3): XA START, the service's statements, XA END + XA
// PREPARE, then the connection is closed, never pooled again: MariaDB ties a prepared XA branch to
// the connection that prepared it until that connection closes (XA COMMIT elsewhere is XAER_NOTA).
// mysql2 has no tagged templates, so a template becomes text here, each value escaped by mysql2.
import mysql, { type PoolConnection, type ResultSetHeader } from "mysql2/promise";
import { xaXid } from "../src/protocol/sql-branch.ts";
import { ProtocolError } from "./errors.ts";
import { SqlHelper, type SqlPool, type SqlPoolOptions, type SqlResult, type SqlSession, sqlResult } from "./sql-session.ts";

export function mysqlPool(url: string, o: SqlPoolOptions): SqlPool {
  const pool = mysql.createPool({
    uri: url,
    connectionLimit: o.max,
    connectTimeout: o.connectTimeoutS * 1000,
    idleTimeout: o.idleTimeoutS * 1000,
    supportBigNumbers: true, // BIGINT and DECIMAL past 2^53 come back as strings, never rounded
  });
  return {
    reserve: async () => session(await pool.getConnection()),
    close: () => pool.end(),
  };
}

function session(c: PoolConnection): SqlSession {
  return {
    async begin(gid) {
      await c.query(`XA START ${xaXid(gid)}`);
    },
    async prepare(gid) {
      const xid = xaXid(gid);
      await c.query(`XA END ${xid}`);
      await c.query(`XA PREPARE ${xid}`);
      return "prepared";
    },
    async rollback(gid) {
      const xid = xaXid(gid);
      await c.query(`XA END ${xid}`).catch(() => {}); // already ended if XA PREPARE failed
      await c.query(`XA ROLLBACK ${xid}`);
    },
    query: async (strings, values) => result(await c.query(render(c, strings, values))),
    unsafe: async (text, params) => result(await c.query(text, params as unknown[] | undefined)),
    async end() {
      c.destroy();
    },
  };
}

function result([r]: [unknown, unknown]): SqlResult {
  if (Array.isArray(r)) return sqlResult(r, { count: r.length, affectedRows: 0, lastInsertRowid: null, command: null });
  const h = r as ResultSetHeader;
  return sqlResult([], { count: h.affectedRows, affectedRows: h.affectedRows, lastInsertRowid: h.insertId, command: null });
}

type Escaper = Pick<PoolConnection, "escape" | "escapeId">;

/** A template as MySQL text: each value escaped as a literal, each helper rendered by the keyword before it. */
export function render(c: Escaper, strings: TemplateStringsArray, values: unknown[]): string {
  let text = strings[0];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    text += (v instanceof SqlHelper ? helper(c, text, v) : literal(c, v)) + strings[i + 1];
  }
  return text;
}

// As postgres.js refuses undefined (UNDEFINED_VALUE), so both databases read a query alike.
function literal(c: Escaper, v: unknown): string {
  if (v === undefined) throw new ProtocolError("BAD_REQUEST", "tx.sql: a value in the query is undefined; pass null for NULL");
  return c.escape(v);
}

function helper(c: Escaper, before: string, { value, columns }: SqlHelper): string {
  const keyword = /(\w+)\s*$/.exec(before)?.[1]?.toLowerCase();
  const list = (xs: unknown[]) => xs.map((x) => literal(c, x)).join(", ");
  if (keyword === "in") return `(${list(Array.isArray(value) ? value : [value])})`;
  if (typeof value === "string") return c.escapeId(value);
  if (Array.isArray(value) && value.every((x) => typeof x === "string")) return value.map((x) => c.escapeId(x)).join(", ");
  const rows = (Array.isArray(value) ? value : [value]) as Record<string, unknown>[];
  const cols = columns.length ? columns : Object.keys(rows[0] ?? {});
  if (keyword === "set") return cols.map((k) => `${c.escapeId(k)} = ${literal(c, rows[0][k])}`).join(", ");
  const tuples = rows.map((row) => `(${list(cols.map((k) => row[k]))})`).join(", ");
  return keyword === "values" ? tuples : `(${cols.map((k) => c.escapeId(k)).join(", ")}) VALUES ${tuples}`;
}
