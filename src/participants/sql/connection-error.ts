// Turn a failure to reach a database into DtxError SQL_CONNECTION_FAILED (other errors pass through).
import { DtxError, ErrorCode } from "../../protocol/errors.ts";
import { redactUrl, sqlErrorCode } from "../../protocol/sql-branch.ts";
import type { SqlDatabase } from "./databases.ts";

export function connectionError(db: SqlDatabase, err: unknown): unknown {
  if (sqlErrorCode(db.kind, err) !== ErrorCode.SQL_CONNECTION_FAILED) return err;
  const why = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
  return new DtxError(ErrorCode.SQL_CONNECTION_FAILED, `cannot reach database "${db.name}" at ${redactUrl(db.url)} (${why}); is the server running?`);
}

/** Run a query, turning an unreachable server into SQL_CONNECTION_FAILED. */
export async function guarded<T>(db: SqlDatabase, q: () => Promise<T>): Promise<T> {
  try {
    return await q();
  } catch (err) {
    throw connectionError(db, err);
  }
}
