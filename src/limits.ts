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
} as const;

export const timing = {
  tickMs: 20,
  defaultTimeoutMs: 30_000,
  resendMs: 200,
  /** How long a coordinator holds an enlist whose begin has not arrived before refusing it as unknown (< resendMs). */
  enlistParkMs: 40,
  askCoordinatorMs: 1_000,
  retentionMs: 24 * 60 * 60 * 1000,
} as const;

/** The client protocol (hello). 2: begin's branch may be chosen by the client, and prepare may carry the begin. 3: unknown fields are refused, o_create takes requirements. */
export const PROTOCOL_VERSION = 3;
/** What sidecars speak to each other (challenge/auth). 2: peer messages are strict; enlist_refused carries a code. */
export const FEDERATION_VERSION = 2;
