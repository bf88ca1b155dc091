// Worker thread for seed-runner.ts: runs one slice of seeds and posts the report.
import { runRange } from "./seed-runner.ts";

declare const self: Worker;

self.onmessage = (e: MessageEvent<{ from: number; count: number }>) => {
  self.postMessage(runRange(e.data.from, e.data.count));
};
