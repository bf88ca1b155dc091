// tx.sql on MySQL: a template becomes text with every value escaped by mysql2, and a helper renders by
// the keyword before it, as postgres.js's helpers do on PostgreSQL.
import { describe, expect, test } from "bun:test";
import mysql from "mysql2/promise";
import { render } from "../../client/sql-mysql.ts";
import { SqlHelper } from "../../client/sql-session.ts";

const c = { escape: mysql.escape, escapeId: mysql.escapeId };
const sql = (strings: TemplateStringsArray, ...values: unknown[]) => render(c, strings, values);
const h = (value: unknown, ...columns: string[]) => new SqlHelper(value, columns);

describe("values", () => {
  test("each value is an escaped literal; the template's own text, a ? included, is left as written", () => {
    expect(sql`SELECT '?' AS q, ${"it's"} AS s, ${42} AS n, ${null} AS z`).toBe("SELECT '?' AS q, 'it\\'s' AS s, 42 AS n, NULL AS z");
  });

  test("undefined is refused (pass null), as postgres.js refuses it on PostgreSQL", () => {
    expect(() => sql`SELECT ${undefined}`).toThrow(/undefined; pass null/);
  });
});

describe("helpers", () => {
  test("a name or names are quoted identifiers", () => {
    expect(sql`SELECT ${h(["id", "qty"])} FROM ${h("shop.stock")}`).toBe("SELECT `id`, `qty` FROM `shop`.`stock`");
  });

  test("rows after INSERT INTO t: columns and VALUES, the columns picked and ordered by the helper's", () => {
    expect(sql`INSERT INTO t ${h({ id: 1, sku: "A" })}`).toBe("INSERT INTO t (`id`, `sku`) VALUES (1, 'A')");
    expect(sql`INSERT INTO t ${h([{ id: 1, sku: "A", x: 0 }, { id: 2, sku: "B", x: 0 }], "sku", "id")}`).toBe("INSERT INTO t (`sku`, `id`) VALUES ('A', 1), ('B', 2)");
  });

  test("a row after SET, rows after VALUES, a list after IN", () => {
    expect(sql`UPDATE t SET ${h({ qty: 3, sku: "B" })} WHERE id = ${1}`).toBe("UPDATE t SET `qty` = 3, `sku` = 'B' WHERE id = 1");
    expect(sql`INSERT INTO t (id) VALUES ${h([{ id: 1 }, { id: 2 }], "id")}`).toBe("INSERT INTO t (id) VALUES (1), (2)");
    expect(sql`SELECT * FROM t WHERE sku in ${h(["A", "B"])}`).toBe("SELECT * FROM t WHERE sku in ('A', 'B')");
  });
});
