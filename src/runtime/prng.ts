// The runtime's one source of randomness (DESIGN §2): mulberry32. The sidecar
// seeds it from crypto at start; the simulator seeds one per run, so a seed
// replays the exact same run. Boot ids and retry jitter come from it.
export class Prng {
  private state: number;

  constructor(seed: number) {
    // Spread nearby seeds apart before the first draw.
    this.state = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  /** A boot id: four base-36 characters (branch ids embed it, so restarts of one node differ). */
  bootId(): string {
    return this.int(36 ** 4).toString(36).padStart(4, "0");
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[this.int(items.length)];
  }
}

/** A Prng seeded from the operating system's randomness, for a process (the sidecar) that must not repeat a run. */
export function seededPrng(): Prng {
  return new Prng(crypto.getRandomValues(new Uint32Array(1))[0]);
}
