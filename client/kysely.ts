// dtx/kysely: a Kysely query builder on one database branch of a transaction. Its queries run through
// the branch's tx.sql(db).unsafe, so they are part of the transaction exactly as tx.sql's are (the
// branch protocol is client/sql.ts's). Kysely is an optional peer dependency: only this module loads it.
//
//   await dtx.beginDistributed("provision_user_123", async (tx) => {
//     const db = kysely<DB>(tx, "orders");
//     await db.insertInto("users").values({ id: 123, status: "pending" }).execute();
//   });
//
// Which SQL to write (PostgreSQL or MySQL) is known once the sidecar opened the branch (sql_open
// answers its kind), but Kysely compiles a query before running it: a query compiled before then is
// compiled again, for its database, when it runs.
import {
  type CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  Kysely,
  MysqlAdapter,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryCompiler,
  type QueryResult,
} from "kysely";
import type { SqlKind } from "../src/protocol/sql-branch.ts";
import { ProtocolError } from "./errors.ts";
import type { SqlHandle } from "./sql.ts";
import type { Tx } from "./transaction.ts";

/** A Kysely<DB> whose queries run in database `db`'s branch of `tx` (a --db name of the sidecar); use it only inside the callback. */
export function kysely<DB>(tx: Tx, db: string): Kysely<DB> {
  return new Kysely<DB>({ dialect: new BranchDialect(tx.sql(db), db) });
}

const compilers: Record<SqlKind, QueryCompiler> = { postgres: new PostgresQueryCompiler(), mysql: new MysqlQueryCompiler() };
const adapters: Record<SqlKind, DialectAdapter> = { postgres: new PostgresAdapter(), mysql: new MysqlAdapter() };

class BranchDialect implements Dialect {
  private kind?: SqlKind;
  /** Queries compiled before the branch's kind was known: compiled again when they run. */
  private readonly deferred = new WeakSet<CompiledQuery>();

  constructor(
    private readonly sql: SqlHandle,
    private readonly db: string,
  ) {}

  private async known(): Promise<SqlKind> {
    this.kind ??= await this.sql.kind();
    return this.kind;
  }

  private adapter(): DialectAdapter {
    if (!this.kind) throw new ProtocolError("INVALID_STATE", `kysely(tx, "${this.db}"): run a query before asking what its database supports or holds`);
    return adapters[this.kind];
  }

  createQueryCompiler(): QueryCompiler {
    return {
      compileQuery: (node, queryId) => {
        if (this.kind) return compilers[this.kind].compileQuery(node, queryId);
        const later: CompiledQuery = Object.freeze({ query: node, queryId, sql: `/* compiled when it runs in "${this.db}" */`, parameters: [] });
        this.deferred.add(later);
        return later;
      },
    };
  }

  createAdapter(): DialectAdapter {
    const dialect = this;
    return {
      get supportsCreateIfNotExists() {
        return dialect.adapter().supportsCreateIfNotExists;
      },
      get supportsTransactionalDdl() {
        return dialect.adapter().supportsTransactionalDdl;
      },
      get supportsReturning() {
        return dialect.adapter().supportsReturning;
      },
      get supportsOutput() {
        return dialect.adapter().supportsOutput;
      },
      acquireMigrationLock: (db, options) => dialect.adapter().acquireMigrationLock(db, options),
      releaseMigrationLock: (db, options) => dialect.adapter().releaseMigrationLock(db, options),
    };
  }

  // Kysely asks for it when db.introspection is first read.
  createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    this.adapter(); // the same refusal before the branch's kind is known
    return this.kind === "postgres" ? new PostgresIntrospector(db) : new MysqlIntrospector(db);
  }

  createDriver(): Driver {
    const connection: DatabaseConnection = {
      executeQuery: async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        const kind = await this.known();
        const q = this.deferred.has(query) ? compilers[kind].compileQuery(query.query, query.queryId) : query;
        const r = await this.sql.unsafe<R>(q.sql, q.parameters);
        return {
          rows: [...r],
          numAffectedRows: BigInt(r.affectedRows),
          insertId: r.lastInsertRowid ? BigInt(r.lastInsertRowid) : undefined,
        };
      },
      streamQuery: () => {
        throw new ProtocolError("BAD_REQUEST", `kysely(tx, "${this.db}"): stream() is not supported in a dtx branch; use execute()`);
      },
    };
    const inBranch = (): never => {
      throw new ProtocolError("INVALID_STATE", `kysely(tx, "${this.db}") already runs inside the transaction's branch; run its queries directly, without transaction()`);
    };
    return {
      init: async () => {},
      acquireConnection: async () => connection,
      beginTransaction: async () => inBranch(),
      commitTransaction: async () => inBranch(),
      rollbackTransaction: async () => inBranch(),
      releaseConnection: async () => {},
      destroy: async () => {},
    };
  }
}
