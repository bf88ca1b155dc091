// Prometheus text-format metrics, with no dependency: counters, gauges and
// histograms keyed by label sets, rendered on /metrics.
type Labels = Record<string, string>;

const render = (labels: Labels) =>
  Object.keys(labels)
    .sort()
    .map((k) => `${k}="${String(labels[k]).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
    .join(",");

// Label sets repeat (a handful of ops, outcomes, phases): render each once, not on every request.
const rendered = new Map<string, string>();
const renderedMax = 10_000;
// A caller that passes the same label object every time (a module constant) skips even building the raw key.
const byObject = new WeakMap<Labels, string>();
const key = (labels: Labels): string => {
  const known = byObject.get(labels);
  if (known !== undefined) return known;
  const k = keyOf(labels);
  if (Object.isFrozen(labels)) byObject.set(labels, k);
  return k;
};
const keyOf = (labels: Labels): string => {
  let raw = "";
  for (const k in labels) raw += `${k}\u0000${labels[k]}\u0001`;
  if (raw === "") return "";
  let k = rendered.get(raw);
  if (k === undefined) {
    k = render(labels);
    if (rendered.size < renderedMax) rendered.set(raw, k);
  }
  return k;
};

class Series<T> {
  readonly values = new Map<string, T>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
  ) {}
}

/** Label sets that never change: frozen, so their key is computed once (see key). */
export const constLabels = <T extends Labels>(labels: T): Readonly<T> => Object.freeze(labels);
const noLabels = constLabels({});

export const latencyBucketsMs = [0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 30000];
export const batchBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

interface Histogram {
  buckets: number[];
  counts: number[];
  sum: number;
  count: number;
}

export class Metrics {
  private counters = new Map<string, Series<number>>();
  private gauges = new Map<string, Series<() => number> | Series<number>>();
  private histograms = new Map<string, Series<Histogram> & { bounds: number[] }>();

  counter(name: string, help: string, labels: Labels = noLabels, by = 1): void {
    let s = this.counters.get(name);
    if (!s) this.counters.set(name, (s = new Series<number>(name, help, "counter")));
    const k = key(labels);
    s.values.set(k, (s.values.get(k) ?? 0) + by);
  }

  /** A gauge read when /metrics is scraped. */
  gauge(name: string, help: string, read: () => number | Record<string, number>, labelName = "state", type: "gauge" | "counter" = "gauge"): void {
    const s = new Series<() => number>(name, help, type);
    (s as unknown as { read: typeof read; labelName: string }).read = read;
    (s as unknown as { labelName: string }).labelName = labelName;
    this.gauges.set(name, s);
  }

  /** A counter its owner keeps (per label value) and that is read at scrape time: no label work on the hot path. */
  counterFrom(name: string, help: string, read: () => Record<string, number>, labelName: string): void {
    this.gauge(name, help, read, labelName, "counter");
  }

  observe(name: string, help: string, value: number, labels: Labels = noLabels, bounds = latencyBucketsMs): void {
    let s = this.histograms.get(name);
    if (!s) this.histograms.set(name, (s = Object.assign(new Series<Histogram>(name, help, "histogram"), { bounds })));
    const k = key(labels);
    let h = s.values.get(k);
    if (!h) s.values.set(k, (h = { buckets: s.bounds, counts: s.bounds.map(() => 0), sum: 0, count: 0 }));
    for (let i = 0; i < h.buckets.length; i++) if (value <= h.buckets[i]) h.counts[i]++;
    h.sum += value;
    h.count++;
  }

  value(name: string, labels: Labels = {}): number {
    return this.counters.get(name)?.values.get(key(labels)) ?? 0;
  }

  render(): string {
    const out: string[] = [];
    const head = (s: { name: string; help: string; type: string }) => out.push(`# HELP ${s.name} ${s.help}`, `# TYPE ${s.name} ${s.type}`);
    const line = (name: string, labels: string, v: number) => out.push(`${name}${labels ? `{${labels}}` : ""} ${Number.isFinite(v) ? v : 0}`);
    for (const s of this.counters.values()) {
      head(s);
      for (const [k, v] of s.values) line(s.name, k, v);
    }
    for (const s of this.gauges.values()) {
      head(s);
      const g = s as unknown as { read: () => number | Record<string, number>; labelName: string };
      const v = g.read();
      if (typeof v === "number") line(s.name, "", v);
      else for (const [label, n] of Object.entries(v)) line(s.name, key({ [g.labelName]: label }), n);
    }
    for (const s of this.histograms.values()) {
      head(s);
      for (const [k, h] of s.values) {
        const sep = k ? `${k},` : "";
        h.buckets.forEach((b, i) => line(`${s.name}_bucket`, `${sep}le="${b}"`, h.counts[i]));
        line(`${s.name}_bucket`, `${sep}le="+Inf"`, h.count);
        line(`${s.name}_sum`, k, h.sum);
        line(`${s.name}_count`, k, h.count);
      }
    }
    return `${out.join("\n")}\n`;
  }
}
