// The words every kind of log record uses: records.ts (2PC) and orchestration-records.ts (orchestrated
// transactions, the barrier) both import them, and neither imports the other's types.
export type Protocol = "2pc" | "saga";

/** A write in a branch's write set: a value, or a deletion. */
export type Write = [key: string, value: unknown, deleted: boolean];
