// Runs ranges of simulator seeds, in this thread or spread over worker threads
// (one seed's run is independent of every other, so the split changes nothing
// but the wall time).
import { availableParallelism } from "node:os";
import { type SimOptions, simulate } from "./simulator.ts";

export interface RangeReport {
  seeds: number;
  failures: Array<{ seed: number; message: string }>;
  events: number;
  txns: number;
  committed: number;
  sagas: number;
  sagasResolved: number;
  sagaStepsUnreached: number;
  crashes: number;
}

/** Failures kept per report: the first few tell the story, the count tells the rest. */
const failuresKept = 20;
const sliceSeeds = 200;

export function runRange(from: number, count: number, opts: SimOptions = {}): RangeReport {
  const report: RangeReport = { seeds: 0, failures: [], events: 0, txns: 0, committed: 0, sagas: 0, sagasResolved: 0, sagaStepsUnreached: 0, crashes: 0 };
  for (let seed = from; seed < from + count; seed++) {
    const r = simulate(seed, opts);
    report.seeds++;
    report.events += r.stats.events;
    report.txns += r.stats.txns;
    report.committed += r.stats.committed;
    report.sagas += r.stats.sagas;
    report.sagasResolved += r.stats.sagasResolved;
    report.sagaStepsUnreached += r.stats.sagaStepsUnreached;
    report.crashes += r.stats.crashes;
    if (r.violation) report.failures.push({ seed, message: r.violation.message });
  }
  return report;
}

function merge(into: RangeReport, r: RangeReport): void {
  into.seeds += r.seeds;
  into.events += r.events;
  into.txns += r.txns;
  into.committed += r.committed;
  into.sagas += r.sagas;
  into.sagasResolved += r.sagasResolved;
  into.sagaStepsUnreached += r.sagaStepsUnreached;
  into.crashes += r.crashes;
  into.failures.push(...r.failures);
}

/** Run seeds [from, from+count) on up to `threads` worker threads, handing out slices as workers free up. */
export async function runRangeParallel(from: number, count: number, threads = Math.max(1, Math.min(availableParallelism(), 4))): Promise<RangeReport> {
  const total: RangeReport = { seeds: 0, failures: [], events: 0, txns: 0, committed: 0, sagas: 0, sagasResolved: 0, sagaStepsUnreached: 0, crashes: 0 };
  let next = from;
  const end = from + count;
  const worker = async () => {
    const w = new Worker(new URL("./sim-worker.ts", import.meta.url).href);
    try {
      while (next < end) {
        const slice = { from: next, count: Math.min(sliceSeeds, end - next) };
        next += slice.count;
        const r = await new Promise<RangeReport>((resolve, reject) => {
          w.onmessage = (e: MessageEvent<RangeReport>) => resolve(e.data);
          w.onerror = (e) => reject(new Error(`simulator worker failed: ${e.message}`));
          w.postMessage(slice);
        });
        merge(total, r);
      }
    } finally {
      w.terminate();
    }
  };
  await Promise.all(Array.from({ length: Math.min(threads, Math.ceil(count / sliceSeeds)) }, worker));
  total.failures.sort((a, b) => a.seed - b.seed);
  total.failures.splice(failuresKept);
  return total;
}

export function describeReport(r: RangeReport, ms: number): string {
  const rate = (r.seeds / ms) * 1000;
  return `${r.seeds} seeds in ${(ms / 1000).toFixed(1)} s = ${rate.toFixed(0)} seeds/s; per seed ${(r.events / r.seeds).toFixed(0)} events, ${(r.txns / r.seeds).toFixed(1)} transactions (${(r.committed / r.seeds).toFixed(1)} committed), ${(r.sagas / r.seeds).toFixed(1)} orchestrated (Sagas and 2PC: ${(r.sagasResolved / r.seeds).toFixed(2)} failed and resolved, ${(r.sagaStepsUnreached / r.seeds).toFixed(2)} steps never reached), ${(r.crashes / r.seeds).toFixed(1)} crashes`;
}
