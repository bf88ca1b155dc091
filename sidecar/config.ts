// Sidecar configuration: every flag also as a DTX_* environment variable.
import { z } from "zod";
import { describeZodError, sidecarId } from "../src/protocol/messages.ts";

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

const flags: Record<string, { key: keyof SidecarConfig; env: string; many?: boolean }> = {
  "--id": { key: "id", env: "DTX_ID" },
  "--socket": { key: "socket", env: "DTX_SOCKET" },
  "--data": { key: "data", env: "DTX_DATA" },
  "--port": { key: "port", env: "DTX_PORT" },
  "--host": { key: "host", env: "DTX_HOST" },
  "--peer": { key: "peers", env: "DTX_PEERS", many: true },
  "--secret-file": { key: "secretFile", env: "DTX_SECRET_FILE" },
  "--admin-token-file": { key: "adminTokenFile", env: "DTX_ADMIN_TOKEN_FILE" },
  "--db": { key: "dbs", env: "DTX_DBS", many: true },
  "--sql-reconcile-ms": { key: "sqlReconcileMs", env: "DTX_SQL_RECONCILE_MS" },
  "--storage-reserve-mb": { key: "storageReserveMb", env: "DTX_STORAGE_RESERVE_MB" },
  "--tls-cert": { key: "tlsCert", env: "DTX_TLS_CERT" },
  "--tls-key": { key: "tlsKey", env: "DTX_TLS_KEY" },
  "--tls-ca": { key: "tlsCa", env: "DTX_TLS_CA" },
  "--sql-orphan-ms": { key: "sqlOrphanMs", env: "DTX_SQL_ORPHAN_MS" },
  "--log-level": { key: "logLevel", env: "DTX_LOG_LEVEL" },
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

export class ConfigError extends Error {}

export function parseConfig(argv: string[], env: Record<string, string | undefined> = process.env): SidecarConfig {
  const raw: Record<string, unknown> = { ...defaults, peers: [], dbs: [] };
  for (const [, f] of Object.entries(flags)) {
    const v = env[f.env];
    if (v !== undefined && v !== "") raw[f.key] = f.many ? v.split(",").map((s) => s.trim()).filter(Boolean) : v;
  }
  const fromFlags: Record<string, string[]> = {};
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2) as [string, string | undefined];
    const f = flags[flag];
    if (!f) throw new ConfigError(`unknown flag ${flag}; known: ${Object.keys(flags).join(" ")}`);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new ConfigError(`${flag} needs a value`);
    (fromFlags[f.key] ??= []).push(value);
  }
  for (const [key, values] of Object.entries(fromFlags)) {
    const many = Object.values(flags).find((f) => f.key === key)?.many;
    raw[key] = many ? values : values[values.length - 1];
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`bad configuration: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

export function isLoopback(host: string): boolean {
  return host === "127.0.0.1" || host === "::1" || host === "localhost" || host.startsWith("127.");
}
