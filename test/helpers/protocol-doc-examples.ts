// The worked examples of docs/protocol.md, read out of the document for the test that walks them
// (test/integration/protocol-doc.test.ts). The notation is the document's own ("How the examples are
// written"): fenced blocks `wire` (frames on named connections), `sql <url placeholder>` (statements a
// client runs on a database), `msgpack` (a value and its bytes) and `token` (a context token and its JSON).

export type Step =
  | { k: "send"; conn: string; line: number; body?: unknown; bytes?: Uint8Array; as?: unknown }
  | { k: "expect"; conn: string; line: number; body?: unknown; bytes?: Uint8Array; closed?: true }
  | { k: "sql"; url: string; line: number; statements: string[] }
  | { k: "value"; line: number; value: unknown; bytes: Uint8Array; decodeOnly: boolean }
  | { k: "token"; line: number; token: string; json: unknown };

export interface Section {
  title: string;
  line: number;
  steps: Step[];
}

/** A string "<…>" in an example: in a reply it matches any value (and is remembered); in a request it is replaced by it. */
export const isPlaceholder = (v: unknown): v is string => typeof v === "string" && /^<[^<>]+>$/.test(v);

/** JSON with the document's tags for what JSON cannot show: {"$bigint": "…"}, {"$date": "…"}, {"$bin": "hex"}, {"$undefined": true}. */
export function fromTagged(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromTagged);
  if (v === null || typeof v !== "object") return v;
  const entries = Object.entries(v);
  if (entries.length === 1) {
    const [[tag, x]] = entries;
    if (tag === "$bigint") return BigInt(x as string);
    if (tag === "$date") return new Date(x as string);
    if (tag === "$bin") return hexBytes(x as string);
    if (tag === "$undefined") return undefined;
  }
  return Object.fromEntries(entries.map(([k, x]) => [k, fromTagged(x)]));
}

/** The other way, for messages: values shown as the document writes them. */
export function toTagged(v: unknown): unknown {
  if (typeof v === "bigint") return { $bigint: v.toString() };
  if (v instanceof Date) return { $date: v.toISOString() };
  if (v instanceof Uint8Array) return { $bin: Buffer.from(v).toString("hex") };
  if (v === undefined) return { $undefined: true };
  if (Array.isArray(v)) return v.map(toTagged);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toTagged(x)]));
  return v;
}

export function hexBytes(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  if (!/^([0-9a-f]{2})*$/i.test(clean)) throw new Error(`not hex bytes: ${hex}`);
  return Uint8Array.from(clean.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
}

const parseJson = (text: string, line: number) => {
  try {
    return fromTagged(JSON.parse(text));
  } catch (e) {
    throw new Error(`docs/protocol.md:${line}: not JSON: ${(e as Error).message}: ${text}`);
  }
};

/** One wire line (with its continuation lines joined): `conn → …` or `conn ← …`. */
function wireStep(text: string, line: number): Step {
  const m = /^(\S+) (→|←) ([\s\S]*)$/.exec(text);
  if (!m) throw new Error(`docs/protocol.md:${line}: a wire line is "<connection> → <message>" or "<connection> ← <message>": ${text}`);
  const [, conn, dir, rest] = m;
  if (dir === "←" && rest === "closed") return { k: "expect", conn, line, closed: true };
  const bytes = /^bytes ([0-9a-f ]+)$/i.exec(rest);
  if (bytes) return dir === "→" ? { k: "send", conn, line, bytes: hexBytes(bytes[1]) } : { k: "expect", conn, line, bytes: hexBytes(bytes[1]) };
  const body = parseJson(rest, line);
  return dir === "→" ? { k: "send", conn, line, body } : { k: "expect", conn, line, body };
}

/** Every section (under its nearest heading) with the steps of its examples, in document order. */
export function examples(doc: string): Section[] {
  const lines = doc.split("\n");
  const sections: Section[] = [];
  let current: Section = { title: "(top)", line: 1, steps: [] };
  const flush = () => {
    if (current.steps.length) sections.push(current);
  };
  for (let i = 0; i < lines.length; i++) {
    const heading = /^#{1,6} (.+)$/.exec(lines[i]);
    if (heading) {
      flush();
      current = { title: heading[1], line: i + 1, steps: [] };
      continue;
    }
    const fence = /^```(wire|sql|msgpack|token)\b ?(.*)$/.exec(lines[i]);
    if (!fence) continue;
    const [, kind, info] = fence;
    const start = i + 1;
    const body: { text: string; line: number }[] = [];
    for (i++; i < lines.length && lines[i] !== "```"; i++) body.push({ text: lines[i], line: i + 1 });
    if (kind === "sql") {
      const statements = body
        .map((l) => l.text)
        .join("\n")
        .split(/;\s*(?:\n|$)/)
        .map((s) => s.trim())
        .filter(Boolean);
      current.steps.push({ k: "sql", url: info.trim(), line: start, statements });
      continue;
    }
    if (kind === "token") {
      const [first, ...rest] = body.filter((l) => l.text.trim());
      current.steps.push({ k: "token", line: first.line, token: first.text.trim(), json: JSON.parse(rest.map((l) => l.text).join("\n")) });
      continue;
    }
    if (kind === "msgpack") {
      for (const l of body) {
        if (!l.text.trim() || l.text.startsWith("#")) continue;
        const m = /^(.*?)\s+(=|<=)\s+([0-9a-f ]+)$/i.exec(l.text);
        if (!m) throw new Error(`docs/protocol.md:${l.line}: a msgpack line is "<json> = <hex>" or "<json> <= <hex>": ${l.text}`);
        current.steps.push({ k: "value", line: l.line, value: parseJson(m[1], l.line), bytes: hexBytes(m[3]), decodeOnly: m[2] === "<=" });
      }
      continue;
    }
    // wire: a line starting with whitespace continues the one before; "#" lines are comments, but
    // "# body: {…}" after a `bytes` line says what those bytes decode to, and is checked.
    let pending: { text: string; line: number } | undefined;
    const done = () => {
      if (pending) current.steps.push(wireStep(pending.text, pending.line));
      pending = undefined;
    };
    for (const l of body) {
      if (/^\s+\S/.test(l.text) && pending) {
        pending.text += ` ${l.text.trim()}`;
        continue;
      }
      done();
      const as = /^# body: (.*)$/.exec(l.text);
      if (as) {
        const prev = current.steps.at(-1);
        if (!prev || !("bytes" in prev) || !prev.bytes) throw new Error(`docs/protocol.md:${l.line}: "# body:" follows a bytes line`);
        (prev as { as?: unknown }).as = parseJson(as[1], l.line);
        continue;
      }
      if (!l.text.trim() || l.text.startsWith("#")) continue;
      pending = { ...l };
    }
    done();
  }
  flush();
  return sections;
}
