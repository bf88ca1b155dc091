// What one call to a participant came back with, for the orchestrator.
export interface CallOutcome {
  /** ok; fail: a definitive no (a vote to abort, a business refusal); retry: try again later. */
  outcome: "ok" | "fail" | "retry";
  result?: unknown;
  error?: string;
}
