// The SQL databases a sidecar is configured with (--db name=url, repeatable).
import { type SqlKind, localBranchCharsMax, sqlDbNamePattern, sqlKindOfUrl, xaPartBytesMax } from "../../protocol/sql-branch.ts";

export interface SqlDatabase {
  name: string;
  url: string;
  kind: SqlKind;
}

/** Parse and check `name=url` entries; throws an Error naming the bad entry. */
export function parseDatabases(entries: string[], sidecarId: string): SqlDatabase[] {
  const out: SqlDatabase[] = [];
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    const name = entry.slice(0, eq);
    const url = entry.slice(eq + 1);
    if (eq < 1 || !url) throw new Error(`--db ${entry}: expected name=url, e.g. --db orders=postgres://user@127.0.0.1:5432/orders`);
    if (!sqlDbNamePattern.test(name)) throw new Error(`--db ${name}: the name must match ${sqlDbNamePattern.source}`);
    if (out.some((d) => d.name === name)) throw new Error(`--db ${name} is given twice`);
    const kind = sqlKindOfUrl(url);
    if (!kind) throw new Error(`--db ${name}: the URL must start with postgres://, postgresql://, mysql:// or mariadb://`);
    // XA: bqual is "dtx:<sidecar>:<local branch id>:<db>" and may hold at most 64 bytes.
    const bqualMax = `dtx:${sidecarId}::${name}`.length + localBranchCharsMax;
    if (kind === "mysql" && bqualMax > xaPartBytesMax) {
      throw new Error(`--db ${name}: sidecar id "${sidecarId}" plus database name "${name}" are too long for an XA branch qualifier (${bqualMax} > ${xaPartBytesMax} bytes); shorten one of them`);
    }
    out.push({ name, url, kind });
  }
  return out;
}
