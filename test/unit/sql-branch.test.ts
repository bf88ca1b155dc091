// Gids, XA xids, database error codes and --db parsing for SQL branches.
import { describe, expect, test } from "bun:test";
import { errorFromWire, SqlError } from "../../client/errors.ts";
import { parseDatabases } from "../../src/participants/sql/databases.ts";
import { formatGid, gidFromXaRow, parseGid, redactUrl, sqlErrorCode, xaFormatId, xaXid } from "../../src/protocol/sql-branch.ts";

describe("gids", () => {
  const parts = { sidecar: "orders-svc", branch: "orders-svc.k3f2.1a", db: "orders", name: "order:42" };

  test("format and parse round-trip, the transaction name last (it may contain ':')", () => {
    const made = formatGid(parts, "postgres");
    expect(made).toEqual({ gid: "dtx:orders-svc:k3f2.1a:orders:order:42" });
    expect(parseGid((made as { gid: string }).gid)).toEqual(parts);
  });

  test("someone else's gids do not parse", () => {
    expect(parseGid("order-42")).toBeUndefined();
    expect(parseGid("xyz:a:b:c:d")).toBeUndefined();
    expect(parseGid("dtx:a:b:c:")).toBeUndefined();
  });

  test("XA: gtrid is the transaction name, bqual the rest, formatID marks dtx; XA RECOVER rows map back", () => {
    const gid = "dtx:orders-svc:k3f2.1a:stock:order-42";
    expect(xaXid(gid)).toBe(`'order-42','dtx:orders-svc:k3f2.1a:stock',${xaFormatId}`);
    const data = Buffer.from("order-42dtx:orders-svc:k3f2.1a:stock");
    expect(gidFromXaRow({ formatID: xaFormatId, gtrid_length: 8, bqual_length: 28, data })).toBe(gid);
    expect(gidFromXaRow({ formatID: 1, gtrid_length: 8, bqual_length: 28, data })).toBeUndefined();
  });

  test("an XA branch qualifier over 64 bytes is refused", () => {
    const long = { ...parts, sidecar: "s".repeat(32), branch: `${"s".repeat(32)}.k3f2.1a`, db: "d".repeat(30) };
    expect(formatGid(long, "mysql")).toHaveProperty("error");
    expect(formatGid(long, "postgres")).toHaveProperty("gid");
  });
});

describe("database errors", () => {
  test("PostgreSQL: prepared transactions disabled, duplicate and unknown gids, lost connections", () => {
    expect(sqlErrorCode("postgres", { errno: "55000", message: "prepared transactions are disabled" })).toBe("SQL_PREPARED_DISABLED");
    expect(sqlErrorCode("postgres", { errno: "42710", message: 'transaction identifier "x" is already in use' })).toBe("SQL_GID_DUPLICATE");
    expect(sqlErrorCode("postgres", { errno: "42704", message: "prepared transaction with identifier does not exist" })).toBe("SQL_GID_UNKNOWN");
    expect(sqlErrorCode("postgres", { code: "ERR_POSTGRES_CONNECTION_REFUSED" })).toBe("SQL_CONNECTION_FAILED");
    expect(sqlErrorCode("postgres", { code: "ERR_POSTGRES_SERVER_ERROR", errno: "23503" })).toBeUndefined();
  });

  test("postgres.js and mysql2 (the client's drivers): SQLSTATE in code, errno, Node's connection errors", () => {
    expect(sqlErrorCode("postgres", { code: "55000", message: "prepared transactions are disabled" })).toBe("SQL_PREPARED_DISABLED");
    expect(sqlErrorCode("postgres", { code: "42710" })).toBe("SQL_GID_DUPLICATE");
    expect(sqlErrorCode("postgres", { code: "57P01" })).toBe("SQL_CONNECTION_FAILED");
    expect(sqlErrorCode("postgres", { code: "ECONNREFUSED", errno: -111 })).toBe("SQL_CONNECTION_FAILED");
    expect(sqlErrorCode("postgres", { code: "CONNECT_TIMEOUT" })).toBe("SQL_CONNECTION_FAILED");
    expect(sqlErrorCode("postgres", { code: "23503" })).toBeUndefined();
    expect(sqlErrorCode("mysql", { code: "ER_XAER_DUPID", errno: 1440 })).toBe("SQL_GID_DUPLICATE");
    expect(sqlErrorCode("mysql", { code: "PROTOCOL_CONNECTION_LOST" })).toBe("SQL_CONNECTION_FAILED");
    expect(sqlErrorCode("mysql", { code: "ER_DUP_ENTRY", errno: 1062 })).toBeUndefined();
  });

  test("MySQL/MariaDB: XAER_DUPID, XAER_NOTA, lost connections", () => {
    expect(sqlErrorCode("mysql", { errno: 1440 })).toBe("SQL_GID_DUPLICATE");
    expect(sqlErrorCode("mysql", { errno: 1397 })).toBe("SQL_GID_UNKNOWN");
    expect(sqlErrorCode("mysql", { code: "ERR_MYSQL_CONNECTION_CLOSED" })).toBe("SQL_CONNECTION_FAILED");
  });

  test("SQL_* wire errors reach the client as SqlError with their code", () => {
    const e = errorFromWire({ code: "SQL_DB_UNKNOWN", message: 'no database "x"', retryable: false });
    expect(e).toBeInstanceOf(SqlError);
    expect(e.code).toBe("SQL_DB_UNKNOWN");
    expect(errorFromWire({ code: "SQL_CONNECTION_FAILED", message: "down", retryable: true }).retryable).toBe(true);
  });

  test("passwords never reach messages", () => {
    expect(redactUrl("postgres://app:s3cret@db:5432/orders")).toBe("postgres://app:***@db:5432/orders");
    expect(redactUrl("mysql://root@127.0.0.1:3306/test")).toBe("mysql://root@127.0.0.1:3306/test");
  });
});

describe("--db", () => {
  test("name=url for PostgreSQL and MySQL/MariaDB", () => {
    expect(parseDatabases(["orders=postgres://u@h/o", "stock=mariadb://u@h/s"], "A")).toEqual([
      { name: "orders", url: "postgres://u@h/o", kind: "postgres" },
      { name: "stock", url: "mariadb://u@h/s", kind: "mysql" },
    ]);
  });

  test("bad entries say what is wrong", () => {
    expect(() => parseDatabases(["orders=sqlite://x"], "A")).toThrow("postgres://");
    expect(() => parseDatabases(["a=postgres://x", "a=postgres://y"], "A")).toThrow("twice");
    expect(() => parseDatabases(["bad:name=postgres://x"], "A")).toThrow("must match");
    expect(() => parseDatabases([`${"d".repeat(30)}=mysql://x`], "s".repeat(32))).toThrow("too long for an XA branch qualifier");
  });
});
