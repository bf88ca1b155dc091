// SQL branches (DESIGN §5.3): the global transaction id (gid) that names a
// branch in a database, and how database errors map to stable codes. Shared by
// the client (which prepares the branch) and the sidecar (which finishes it).
//
// One canonical gid per branch and database:
//   dtx:<sidecar>:<local branch id>:<db>:<txn name>
// PostgreSQL uses it as is (≤ 199 characters). MySQL/MariaDB XA splits it:
// gtrid = <txn name> (≤ 64 bytes), bqual = dtx:<sidecar>:<local branch id>:<db>
// (≤ 64 bytes), formatID = xaFormatId. The sidecar id in the gid says who owns
// it, so a sidecar never touches another's gids.
import { ErrorCode } from "./errors.ts";

export type SqlKind = "postgres" | "mysql";

export const sqlDbNamePattern = /^[A-Za-z0-9_.-]{1,32}$/;
/** "dtx" in ASCII: marks dtx's XA branches in XA RECOVER. */
export const xaFormatId = 0x647478;
export const pgGidCharsMax = 199;
export const xaPartBytesMax = 64;
/** Budget for the local branch id (boot id, dot, base-36 sequence) when checking XA lengths at start-up. */
export const localBranchCharsMax = 13;

const marker = "dtx";
const field = /^[A-Za-z0-9_.-]+$/;
const gidChars = /^[A-Za-z0-9_.:-]+$/;
const sqlStatePattern = /^[0-9A-Z]{5}$/;

export interface GidParts {
  sidecar: string;
  /** The full branch id (`<sidecar>.<boot>.<seq>`). */
  branch: string;
  db: string;
  name: string;
}

/** The gid of a branch's work in one database, or an error message when it cannot be formed. */
export function formatGid(p: GidParts, kind: SqlKind): { gid: string } | { error: string } {
  const prefix = `${p.sidecar}.`;
  if (!p.branch.startsWith(prefix)) return { error: `branch id ${p.branch} does not start with its sidecar id ${p.sidecar}` };
  const local = p.branch.slice(prefix.length);
  if (!field.test(local) || !field.test(p.sidecar) || !sqlDbNamePattern.test(p.db) || !gidChars.test(p.name)) {
    return { error: `cannot form a gid from sidecar ${p.sidecar}, branch ${p.branch}, db ${p.db}` };
  }
  const bqual = `${marker}:${p.sidecar}:${local}:${p.db}`;
  const gid = `${bqual}:${p.name}`;
  if (kind === "mysql" && (bqual.length > xaPartBytesMax || p.name.length > xaPartBytesMax)) {
    return { error: `XA branch qualifier ${bqual} is longer than ${xaPartBytesMax} bytes; use a shorter sidecar id or --db name` };
  }
  if (gid.length > pgGidCharsMax) return { error: `gid ${gid} is longer than ${pgGidCharsMax} characters` };
  return { gid };
}

/** The parts of a dtx gid, or undefined for any other gid (someone else's prepared transaction). */
export function parseGid(gid: string): GidParts | undefined {
  const parts = gid.split(":");
  if (parts.length < 5 || parts[0] !== marker) return undefined;
  const [, sidecar, local, db] = parts;
  const name = parts.slice(4).join(":");
  if (!field.test(sidecar) || !field.test(local) || !sqlDbNamePattern.test(db) || !name) return undefined;
  return { sidecar, branch: `${sidecar}.${local}`, db, name };
}

/** The XA xid of a gid as SQL text: 'gtrid','bqual',formatID. Only dtx gids (quote-free by construction). */
export function xaXid(gid: string): string {
  const p = parseGid(gid);
  if (!p || !gidChars.test(gid)) throw new Error(`not a dtx gid: ${gid}`);
  const cut = gid.length - p.name.length - 1;
  return `'${gid.slice(cut + 1)}','${gid.slice(0, cut)}',${xaFormatId}`;
}

/** The canonical gid of an XA RECOVER row (gtrid and bqual are concatenated in `data`). */
export function gidFromXaRow(row: { formatID: unknown; gtrid_length: unknown; bqual_length: unknown; data: unknown }): string | undefined {
  if (Number(row.formatID) !== xaFormatId) return undefined;
  const data = typeof row.data === "string" ? Buffer.from(row.data, "latin1") : Buffer.from(row.data as Uint8Array);
  const g = Number(row.gtrid_length);
  const b = Number(row.bqual_length);
  if (!(g >= 0 && b >= 0 && g + b <= data.length)) return undefined;
  return `${data.subarray(g, g + b).toString("latin1")}:${data.subarray(0, g).toString("latin1")}`;
}

/** PostgreSQL's PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED take a string literal. */
export function pgGidLiteral(gid: string): string {
  if (!gidChars.test(gid)) throw new Error(`not a dtx gid: ${gid}`);
  return `'${gid}'`;
}

export function sqlKindOfUrl(url: string): SqlKind | undefined {
  const scheme = /^([a-z]+):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "postgres" || scheme === "postgresql") return "postgres";
  if (scheme === "mysql" || scheme === "mariadb") return "mysql";
  return undefined;
}

/** A URL fit for messages and logs: the password replaced. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@/]*@/i, "$1:***@");
}

export function preparedDisabledMessage(db: string): string {
  return (
    `database "${db}" (PostgreSQL) has prepared transactions disabled (max_prepared_transactions = 0, the default). ` +
    `Enable them: run ALTER SYSTEM SET max_prepared_transactions = 64; as a superuser and restart PostgreSQL ` +
    `(or set max_prepared_transactions = 64 in postgresql.conf and restart); scripts/prepare-services.sh does this for tests`
  );
}

/**
 * What a database error means for a branch, when it is one dtx gives a stable code. Reads the errors of
 * Bun.sql (the sidecar's drivers: SQLSTATE or MySQL errno in `errno`), postgres.js (SQLSTATE in `code`)
 * and mysql2 (errno in `errno`) alike; connection failures of all three carry a `code` such as ECONNREFUSED.
 */
export function sqlErrorCode(kind: SqlKind, err: unknown): ErrorCode | undefined {
  const e = err as { code?: unknown; errno?: unknown; message?: unknown } | null;
  const code = String(e?.code ?? "");
  const errno = String(e?.errno ?? "");
  const message = String(e?.message ?? "");
  if (/CONNECTION|CONNECT_TIMEOUT|ECONN|EPIPE|ETIMEDOUT|ENOTFOUND|TLS|AUTH/i.test(code) && !/SERVER_ERROR/.test(code)) return ErrorCode.SQL_CONNECTION_FAILED;
  if (kind === "postgres") {
    const state = sqlStatePattern.test(code) ? code : errno;
    if (state === "55000" && /prepared transactions are disabled/i.test(message)) return ErrorCode.SQL_PREPARED_DISABLED;
    if (state === "42710") return ErrorCode.SQL_GID_DUPLICATE;
    if (state === "42704") return ErrorCode.SQL_GID_UNKNOWN;
    if (/^(08|57P)/.test(state) || state === "3D000" || state === "28P01" || state === "28000") return ErrorCode.SQL_CONNECTION_FAILED;
  } else {
    if (errno === "1440") return ErrorCode.SQL_GID_DUPLICATE;
    if (errno === "1397") return ErrorCode.SQL_GID_UNKNOWN;
    if (errno === "1045" || errno === "1049" || errno === "2006" || errno === "2013") return ErrorCode.SQL_CONNECTION_FAILED;
  }
  return undefined;
}
