// Every resource has a named bound, checked at the edge (TigerBeetle style).
export const limits = {
  frameBytesMax: 16 * 1024 * 1024,
  keyBytesMax: 512,
  valueBytesMax: 1024 * 1024,
  /** Arrays and objects nested inside one another in a stored value (src/protocol/value.ts). */
  valueDepthMax: 64,
  nameLengthMax: 64,
  inflightTxnsMax: 100_000,
  branchesPerTxnMax: 256,
  opsPerBranchMax: 100_000,
  requestsInFlightPerConnMax: 4096,
  sqlResourcesPerBranchMax: 16,
  /** Enlists a coordinator holds for a name it has not seen begun yet (see timing.enlistParkMs). */
  parkedEnlistsMax: 4096,
  /** Rows `list` answers when the request names no limit. */
  listRowsDefault: 1000,
  /** A branch's rollback reason is logged (p.end) cut to this many characters. */
  reasonCharsMax: 1000,
} as const;

export const timing = {
  tickMs: 20,
  defaultTimeoutMs: 30_000,
  resendMs: 200,
  /** How long a coordinator holds an enlist whose begin has not arrived before refusing it as unknown (< resendMs). */
  enlistParkMs: 40,
  askCoordinatorMs: 1_000,
  /** How long commit and rollback wait for acks before answering with the unacknowledged branches as pending. */
  ackWaitMs: 5_000,
  /** A decision forwarded to the sidecar that coordinates it is answered OUTCOME_UNKNOWN after ackWaitMs plus this (the way there and back). */
  forwardedDecisionMarginMs: 2_000,
  /** A finished transaction or branch stays in memory this long; then status and commit answer from the log. */
  evictAfterMs: 1_000,
  /** The same for a finished orchestrated transaction (once its waiters are answered). */
  orchestrationEvictAfterMs: 10_000,
  /** An orchestrated transaction's timeout when createTransaction names none. */
  orchestrationTimeoutMs: 300_000,
  /** Finished transactions stay readable by status (from the log) this long, then the log prunes them. */
  retentionMs: 24 * 60 * 60 * 1000,
  /** How often the log forgets what finished more than retentionMs ago. */
  pruneEveryMs: 10 * 60_000,
  /** How often the sidecar reads the data directory's free space (admission control, --storage-reserve-mb). */
  storageCheckMs: 250,
  /** How long SIGTERM waits for everything logged to be durable before it closes anyway. */
  drainMaxMs: 5_000,
} as const;

/** The client protocol (hello). 2: begin's branch may be chosen by the client, and prepare may carry the begin. 3: unknown fields are refused, o_create takes requirements. */
export const PROTOCOL_VERSION = 3;
/**
 * What sidecars speak to each other (challenge/auth). 2: peer messages are strict; enlist_refused carries a code.
 * 3: orchestrated transactions run participants on other sidecars (o_call, o_result, o_query, o_decision).
 */
export const FEDERATION_VERSION = 3;
