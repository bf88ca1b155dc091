// MySQL/MariaDB XA. A prepared branch stays attached to the connection that
// prepared it until that connection closes (DESIGN §5.3, MariaDB 10.11):
// until then XA COMMIT from here answers XAER_NOTA while XA RECOVER still
// lists the xid. That is "busy", not "unknown".
import { SQL } from "bun";
import { ErrorCode } from "../../protocol/errors.ts";
import { gidFromXaRow, sqlErrorCode, xaXid } from "../../protocol/sql-branch.ts";
import type { Outcome } from "../../wal/records.ts";
import { connectionError, guarded } from "./connection-error.ts";
import type { SqlDatabase } from "./databases.ts";
import { type FinishResult, type SqlDriver, connectTimeoutS, sidecarPoolMax } from "./driver.ts";

export class MysqlDriver implements SqlDriver {
  private readonly sql: SQL;

  constructor(readonly db: SqlDatabase) {
    this.sql = new SQL(db.url, { max: sidecarPoolMax, connectionTimeout: connectTimeoutS, idleTimeout: 60 });
  }

  async probe(): Promise<void> {
    await this.listPrepared(); // reaches the server and checks the XA RECOVER privilege
  }

  async listPrepared(): Promise<string[]> {
    const rows = await this.run(() => this.sql.unsafe("XA RECOVER"));
    const gids: string[] = [];
    for (const row of rows) {
      const gid = gidFromXaRow(row);
      if (gid) gids.push(gid);
    }
    return gids;
  }

  async finish(gid: string, outcome: Outcome): Promise<FinishResult> {
    try {
      await this.run(() => this.sql.unsafe(`XA ${outcome === "commit" ? "COMMIT" : "ROLLBACK"} ${xaXid(gid)}`));
      return "finished";
    } catch (err) {
      if (sqlErrorCode("mysql", err) !== ErrorCode.SQL_GID_UNKNOWN) throw err;
      return (await this.listPrepared()).includes(gid) ? "busy" : "unknown";
    }
  }

  async close(): Promise<void> {
    await this.sql.close({ timeout: 1 });
  }

  private run<T>(q: () => Promise<T>): Promise<T> {
    return guarded(this.db, q);
  }
}
