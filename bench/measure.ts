// Measurement primitives shared by `dtx bench` and the ad-hoc bench scripts.
import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";

export interface LatencyStats {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

export function stats(samplesMs: number[]): LatencyStats {
  const s = [...samplesMs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return { n: s.length, p50: round(at(0.5)), p99: round(at(0.99)), mean: round(s.reduce((a, b) => a + b, 0) / (s.length || 1)) };
}

/** p50 of a small append + fdatasync in `dir`: the floor of one durable write. */
export function fsyncFloor(dir: string, n = 200): LatencyStats {
  const path = join(dir, `fsync-probe-${process.pid}`);
  const fd = openSync(path, "w");
  const buf = Buffer.alloc(128, 1);
  const samples: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      writeSync(fd, buf);
      fdatasyncSync(fd);
      samples.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  return stats(samples);
}

/** Run `op` with `concurrency` workers for durationMs (or `count` ops at concurrency 1). */
export async function load(op: (worker: number, i: number) => Promise<unknown>, concurrency: number, durationMs: number): Promise<{ latency: LatencyStats; perSec: number; errors: number }> {
  const samples: number[] = [];
  let errors = 0;
  let i = 0;
  const start = performance.now();
  const end = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          await op(w, i++);
          samples.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  return { latency: stats(samples), perSec: Math.round(samples.length / elapsed), errors };
}
