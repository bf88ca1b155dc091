// PostgreSQL: COMMIT PREPARED / ROLLBACK PREPARED work from any session.
import { SQL } from "bun";
import { DtxError, ErrorCode } from "../../protocol/errors.ts";
import { pgGidLiteral, preparedDisabledMessage, sqlErrorCode } from "../../protocol/sql-branch.ts";
import type { Outcome } from "../../wal/records.ts";
import { connectionError, guarded } from "./connection-error.ts";
import type { SqlDatabase } from "./databases.ts";
import { type FinishResult, type SqlDriver, connectTimeoutS, sidecarPoolMax } from "./driver.ts";

export class PostgresDriver implements SqlDriver {
  private readonly sql: SQL;

  constructor(readonly db: SqlDatabase) {
    this.sql = new SQL(db.url, { max: sidecarPoolMax, connectionTimeout: connectTimeoutS, idleTimeout: 60 });
  }

  async probe(): Promise<void> {
    const rows = await this.run(() => this.sql`SELECT current_setting('max_prepared_transactions')::int AS n`);
    if (Number(rows[0]?.n) === 0) throw new DtxError(ErrorCode.SQL_PREPARED_DISABLED, preparedDisabledMessage(this.db.name));
  }

  async listPrepared(): Promise<string[]> {
    const rows = await this.run(() => this.sql`SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'dtx:%'`);
    return rows.map((r: { gid: string }) => r.gid);
  }

  async finish(gid: string, outcome: Outcome): Promise<FinishResult> {
    try {
      await this.run(() => this.sql.unsafe(`${outcome === "commit" ? "COMMIT" : "ROLLBACK"} PREPARED ${pgGidLiteral(gid)}`));
      return "finished";
    } catch (err) {
      if (sqlErrorCode("postgres", err) === ErrorCode.SQL_GID_UNKNOWN) return "unknown";
      if ((err as { errno?: string }).errno === "55006") return "busy"; // another session is finishing it
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.sql.close({ timeout: 1 });
  }

  private run<T>(q: () => Promise<T>): Promise<T> {
    return guarded(this.db, q);
  }
}
