// Sidecar configuration: every flag also as a DTX_* environment variable.
import { z } from "zod";
import { describeZodError, sidecarId } from "../src/protocol/messages.ts";
import { describeFlags, type FlagSpec, parseFlags, UsageError } from "./flags.ts";

const keyValue = z.string().regex(/^[A-Za-z0-9_.-]+=.+$/, "expected id=url");

export const configSchema = z.object({
  id: sidecarId,
  socket: z.string().min(1),
  data: z.string().min(1),
  port: z.coerce.number().int().min(0).max(65535),
  host: z.string().min(1),
  peers: z.array(keyValue),
  secretFile: z.string().optional(),
  /** File holding the bearer token the transaction API and dashboard data require (always, once given). */
  adminTokenFile: z.string().optional(),
  dbs: z.array(keyValue),
  /** How often prepared SQL branches are reconciled with the log. */
  sqlReconcileMs: z.coerce.number().int().min(20).max(3_600_000),
  storageReserveMb: z.coerce.number().min(0).max(1_000_000),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  tlsCa: z.string().optional(),
  /** A prepared SQL branch nobody reported is rolled back once it has been seen this long. */
  sqlOrphanMs: z.coerce.number().int().min(0).max(7 * 24 * 3_600_000),
  logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
});
export type SidecarConfig = z.infer<typeof configSchema>;

/** The sidecar's flags: what parses them and what `dtx --help` prints (with each default). */
export const sidecarFlags: Record<string, FlagSpec & { key: keyof SidecarConfig; env: string }> = {
  "--id": { key: "id", env: "DTX_ID", value: "ID", about: "this sidecar's id, unique among its peers; its data directory remembers it" },
  "--socket": { key: "socket", env: "DTX_SOCKET", value: "PATH", about: "the Unix socket services connect to (mode 0600)" },
  "--data": { key: "data", env: "DTX_DATA", value: "DIR", about: "the write-ahead log and store, with sidecar.pid and sidecar.id" },
  "--port": { key: "port", env: "DTX_PORT", value: "P", about: "HTTP and /v1/federation port; 0 picks a free one" },
  "--host": { key: "host", env: "DTX_HOST", value: "H", about: "address to listen on; beyond loopback it needs --secret-file" },
  "--peer": { key: "peers", env: "DTX_PEERS", many: true, value: "ID=URL", about: "a peer sidecar, ws:// or wss:// (the variable: comma-separated)" },
  "--secret-file": { key: "secretFile", env: "DTX_SECRET_FILE", value: "F", about: "the shared secret peers authenticate with" },
  "--admin-token-file": { key: "adminTokenFile", env: "DTX_ADMIN_TOKEN_FILE", value: "F", about: "the bearer token /v1/ and the dashboard's data require (beyond loopback, without it they answer no one)" },
  "--db": { key: "dbs", env: "DTX_DBS", many: true, value: "NAME=URL", about: "a database for tx.sql, postgres:// or mysql:// (the variable: comma-separated)" },
  "--sql-reconcile-ms": { key: "sqlReconcileMs", env: "DTX_SQL_RECONCILE_MS", value: "MS", about: "how often prepared SQL branches are checked against the log" },
  "--storage-reserve-mb": { key: "storageReserveMb", env: "DTX_STORAGE_RESERVE_MB", value: "MB", about: "free space below which new transactions are refused" },
  "--tls-cert": { key: "tlsCert", env: "DTX_TLS_CERT", value: "F", about: "serve HTTP and /v1/federation over TLS (with --tls-key)" },
  "--tls-key": { key: "tlsKey", env: "DTX_TLS_KEY", value: "F", about: "the private key of --tls-cert" },
  "--tls-ca": { key: "tlsCa", env: "DTX_TLS_CA", value: "F", about: "the CA to trust when dialing wss:// peers" },
  "--sql-orphan-ms": { key: "sqlOrphanMs", env: "DTX_SQL_ORPHAN_MS", value: "MS", about: "a prepared SQL branch nobody reported is rolled back once seen this long" },
  "--log-level": { key: "logLevel", env: "DTX_LOG_LEVEL", value: "L", about: "trace, debug, info, warn, error, fatal or silent" },
};

export const defaults = {
  id: "local",
  socket: "./.dtx/sidecar.sock",
  data: "./.dtx/data",
  port: 7400,
  host: "127.0.0.1",
  logLevel: "info",
  sqlReconcileMs: 10_000,
  storageReserveMb: 16,
  sqlOrphanMs: 60_000,
};

/** A configuration the sidecar cannot run with: the CLI prints it on one line and exits 2. */
export class ConfigError extends UsageError {}

export function parseConfig(argv: string[], env: Record<string, string | undefined> = process.env): SidecarConfig {
  const raw: Record<string, unknown> = { ...defaults, peers: [], dbs: [] };
  for (const f of Object.values(sidecarFlags)) {
    const v = env[f.env];
    if (v !== undefined && v !== "") raw[f.key] = f.many ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  }
  const args = parseFlags("sidecar", argv, sidecarFlags);
  for (const [flag, values] of args.flags) {
    const f = sidecarFlags[flag];
    raw[f.key] = f.many ? values : values[values.length - 1];
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`bad configuration: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/** `dtx --help`'s lines for the sidecar's flags, each with its default. */
export function sidecarFlagHelp(): string[] {
  const withDefaults = Object.entries(sidecarFlags).map(([flag, f]) => [flag, { ...f, default: (defaults as Record<string, unknown>)[f.key] }]);
  return describeFlags(Object.fromEntries(withDefaults));
}

export function isLoopback(host: string): boolean {
  return host === "127.0.0.1" || host === "::1" || host === "localhost" || host.startsWith("127.");
}
