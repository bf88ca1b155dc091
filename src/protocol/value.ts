// What a stored value may be, and how it maps to MessagePack (README "Values", decisions.md "Values").
// A value is stored exactly or refused when it is written, naming the key, where in the value, and why.
// Pure: the client runs it at tx.put, the sidecar on every value it is sent (other clients exist).
import { limits } from "../limits.ts";

/**
 * The options of every msgpackr instance that carries user values: wire frames, peer links, the journal
 * and LMDB's dbis. BigInt of any size travels exactly (int64/uint64, beyond that ext 0x42) and int64/uint64
 * decode as BigInt; msgpackr never writes a JS number as int64, so numbers stay numbers. moreTypes stays
 * off so Uint8Array is plain bin. copyBuffers: a decoded Uint8Array is a copy, not a view that keeps the
 * whole received chunk (or LMDB's read buffer) alive. structuredClone false: the decoder refuses the
 * reference extensions (0x69/0x70) rather than build a circular value from a frame.
 */
export const valueCodec = {
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  int64AsType: "bigint",
  useBigIntExtension: true,
  copyBuffers: true,
  structuredClone: false,
} as const;

export interface Refusal {
  code: "BAD_REQUEST" | "LIMIT_EXCEEDED";
  message: string;
}

/** Why `key` is not a store key, or undefined: a non-empty, well-formed string of at most keyBytesMax UTF-8 bytes. */
export function keyProblem(key: unknown): string | undefined {
  if (typeof key !== "string") return `a key must be a string, not ${kindOf(key)}`;
  if (key.length === 0) return "a key must not be empty";
  if (key.length * 3 > limits.keyBytesMax) {
    const bytes = Buffer.byteLength(key);
    if (bytes > limits.keyBytesMax) return `the key is ${bytes} bytes of UTF-8, over keyBytesMax (${limits.keyBytesMax} bytes)`;
  }
  if (!key.isWellFormed()) return `the key has a lone surrogate at index ${loneSurrogateAt(key)} (not well-formed UTF-16, it would not read back the same); fix the text`;
  return undefined;
}

/** How a call on a key is named in messages: tx.put("orders/42"), with a long key shortened. */
export function callLabel(call: string, key: unknown): string {
  return `${call}(${keyText(key)})`;
}

/** A key as messages show it: JSON-quoted, shortened if long; what it is if it is not a string. */
export function keyText(key: unknown): string {
  return typeof key === "string" ? quoted(key) : kindOf(key);
}

/**
 * The bytes `value` takes in MessagePack at most (exactly, if the bound is over valueBytesMax), or the
 * refusal, in the terms of `what` (e.g. `tx.put("k")`, built only on refusal) with the path inside the
 * value from `root`. `encodedBytes` is the codec's exact size, asked only when the bound is over the limit.
 */
export function checkValue(value: unknown, what: () => string, encodedBytes: (v: unknown) => number, root = "value"): number | Refusal {
  const walked = bytesAtMost(value, 1);
  if (typeof walked !== "number") return { code: "BAD_REQUEST", message: `${what()}: ${describe(walked, root)}` };
  if (walked <= limits.valueBytesMax) return walked;
  const bytes = encodedBytes(value);
  if (bytes <= limits.valueBytesMax) return bytes;
  return { code: "LIMIT_EXCEEDED", message: `${what()}: ${root} is ${bytes} bytes in MessagePack, over valueBytesMax (${limits.valueBytesMax} bytes)` };
}

/** Key and value of a tx.put (or the key of a tx.delete): the bytes the write takes at most, or why it is refused. */
export function checkWrite(op: "put" | "delete", key: unknown, value: unknown, encodedBytes: (v: unknown) => number): number | Refusal {
  const bad = keyProblem(key);
  if (bad) return { code: "BAD_REQUEST", message: `${callLabel(`tx.${op}`, key)}: ${bad}` };
  if (op === "delete") return (key as string).length * 3;
  if (value === undefined) return { code: "BAD_REQUEST", message: `${callLabel("tx.put", key)}: the value is undefined; use tx.delete to remove a key` };
  return checkValue(value, () => callLabel("tx.put", key), encodedBytes);
}

// ---- the walk ------------------------------------------------------------------------------

/** Where the walk stopped: the reason, and (innermost first) the path and the containers down to it. */
interface Failure {
  reason: string;
  path: (string | number)[];
  containers: object[];
  tooDeep?: true;
}

const fail = (reason: string): Failure => ({ reason, path: [], containers: [] });
const int64Min = -(2n ** 63n);
const uint64End = 2n ** 64n;

/**
 * One pass over the value: checks every part and adds up an upper bound of its MessagePack size. Nothing is
 * allocated unless something is refused; then each level on the way out adds its key to the path.
 */
function bytesAtMost(v: unknown, depth: number): number | Failure {
  switch (typeof v) {
    case "string":
      return v.isWellFormed() ? v.length * 3 + 5 : fail(`is a string with a lone surrogate at index ${loneSurrogateAt(v)} (not well-formed UTF-16, it would read back as U+FFFD); fix the text or store the bytes as a Uint8Array`);
    case "number":
      return v === 0 && 1 / v < 0 ? fail("is -0, which would read back as 0; store 0 (x || 0 turns -0 into 0)") : 9;
    case "boolean":
      return 1;
    case "undefined":
      return 3; // inside an array or object: ext 0, read back as undefined
    case "bigint":
      // Beyond 64 bits: ext 0x42, two's complement in whole 64-bit words, behind at most 6 bytes of header.
      return v >= int64Min && v < uint64End ? 9 : Math.ceil((v.toString(16).length * 4 + 1) / 64) * 8 + 6;
    case "function":
      return fail("is a function; functions are not stored");
    case "symbol":
      return fail("is a symbol; symbols are not stored");
    case "object":
      if (v === null) return 1;
      return containerBytesAtMost(v, depth);
  }
  return fail(`is a ${typeof v}, which is not stored`);
}

function containerBytesAtMost(v: object, depth: number): number | Failure {
  if (depth > limits.valueDepthMax) return { ...fail(`is nested deeper than valueDepthMax (${limits.valueDepthMax} levels of arrays and objects)`), tooDeep: true };
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    let n = 5;
    for (const k in v) {
      if (k === "__proto__") return fail('has a property named "__proto__", which would not read back as a property; rename it');
      if (!k.isWellFormed()) return fail(`has a property name with a lone surrogate (${quoted(k)}), which would not read back the same; fix the name`);
      const r = bytesAtMost((v as Record<string, unknown>)[k], depth + 1);
      if (typeof r !== "number") return within(r, k, v);
      n += k.length * 3 + 5 + r;
    }
    const symbols = Object.getOwnPropertySymbols(v);
    if (symbols.length) return fail(`has a symbol-keyed property (${String(symbols[0])}); symbol keys are not stored`);
    return n;
  }
  if (proto === Array.prototype) {
    const a = v as unknown[];
    let n = 5;
    for (let i = 0; i < a.length; i++) {
      const e = a[i];
      if (e === undefined && !(i in a)) return within(fail("is a hole in the array, which would read back as undefined; fill it (with null, say)"), i, v);
      const r = bytesAtMost(e, depth + 1);
      if (typeof r !== "number") return within(r, i, v);
      n += r;
    }
    return n;
  }
  if (v instanceof Uint8Array) return v.length + 5; // a Buffer too; read back as a plain Uint8Array
  if (proto === Date.prototype) return Number.isNaN((v as Date).getTime()) ? fail("is an invalid Date; invalid Dates are not stored") : 15;
  return fail(otherObject(v, proto));
}

function within(f: Failure, key: string | number, container: object): Failure {
  f.path.push(key);
  f.containers.push(container);
  return f;
}

/** Why an object that is neither plain, an array, a Date nor a Uint8Array is refused, with what to do instead. */
function otherObject(v: object, proto: object): string {
  if (v instanceof Map) return "is a Map; Maps are not stored (they would read back as plain objects with string keys): use a plain object, or an array of [key, value] pairs";
  if (v instanceof Set) return "is a Set; Sets are not stored: use an array";
  if (ArrayBuffer.isView(v)) return `is a ${v.constructor.name}; of the typed arrays only Uint8Array is stored: use an array of numbers, or new Uint8Array(x.buffer, x.byteOffset, x.byteLength) for its bytes`;
  if (v instanceof ArrayBuffer || (typeof SharedArrayBuffer === "function" && v instanceof SharedArrayBuffer)) return `is an ${v.constructor.name}; store new Uint8Array(buffer) instead`;
  if (v instanceof String || v instanceof Number || v instanceof Boolean || v instanceof BigInt || v instanceof Symbol)
    return `is a boxed ${v.constructor.name} (new ${v.constructor.name}(…)); store the primitive, x.valueOf()`;
  if (v instanceof Promise) return "is a Promise; await it and store its result";
  if (Array.isArray(v)) return `is an array of class ${className(proto)}; only plain arrays are stored: use Array.from(x)`;
  const name = className(proto);
  return `is ${name === undefined ? "an object whose prototype is not Object.prototype" : `${/^[AEIOU]/.test(name) ? "an" : "a"} ${name} instance`}; class instances are not stored (only plain objects, arrays, Date and Uint8Array): copy its fields into a plain object`;
}

function className(proto: object): string | undefined {
  const c = Object.prototype.hasOwnProperty.call(proto, "constructor") ? (proto as { constructor?: unknown }).constructor : undefined;
  return typeof c === "function" && c.name ? c.name : undefined;
}

/** The message for a failure: `value.items[2].total is a function; …`, or a circular reference named as one. */
function describe(f: Failure, root: string): string {
  const path = [...f.path].reverse();
  if (f.tooDeep) {
    // A value nested past the limit may be circular: name the first container that appears again inside itself.
    const containers = [...f.containers].reverse();
    for (let j = 1; j < containers.length; j++) {
      const i = containers.indexOf(containers[j]);
      if (i < j) return `${root}${pathText(path.slice(0, j))} is a circular reference (it is ${root}${pathText(path.slice(0, i))} again); circular values are not stored`;
    }
  }
  return `${root}${pathText(path)} ${f.reason}`;
}

const pathKeysShown = 12;

/** `.items[2].total`; a path deeper than pathKeysShown keys shows its start and its end. */
function pathText(path: (string | number)[]): string {
  if (path.length > pathKeysShown) return `${pathText(path.slice(0, pathKeysShown - 3))}…(${path.length - pathKeysShown + 1} more)…${pathText(path.slice(-2))}`;
  return path.map((k) => (typeof k === "number" ? `[${k}]` : /^[A-Za-z_$][\w$]*$/.test(k) ? `.${k}` : `[${quoted(k)}]`)).join("");
}

const quotedCharsMax = 60;

/** A string as JSON quotes it, shortened past quotedCharsMax characters (with its size). */
function quoted(s: string): string {
  if (s.length <= quotedCharsMax) return JSON.stringify(s);
  return `${JSON.stringify(s.slice(0, quotedCharsMax - 20))}… (${s.length} characters)`;
}

function kindOf(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  const t = typeof x;
  return t === "object" || t === "undefined" ? (t === "object" ? "an object" : "undefined") : `a ${t}`;
}

function loneSurrogateAt(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
      else return i;
    } else if (c >= 0xdc00 && c <= 0xdfff) return i;
  }
  return -1;
}
