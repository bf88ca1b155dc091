// The value rule (src/protocol/value.ts): what is stored exactly, what is refused, and how a refusal reads.
import { describe, expect, test } from "bun:test";
import { limits } from "../../src/limits.ts";
import { encodeBody } from "../../src/protocol/frame.ts";
import { checkValue, checkWrite, keyProblem, type Refusal } from "../../src/protocol/value.ts";

const encodedBytes = (v: unknown) => encodeBody(v).length;
const put = (value: unknown, key = "orders/42") => checkWrite("put", key, value, encodedBytes);
const refusal = (value: unknown, key?: string) => {
  const r = put(value, key);
  if (typeof r === "number") throw new Error(`accepted (${r} bytes at most)`);
  return r;
};
const nested = (levels: number) => {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = [v];
  return v;
};

class Money {
  constructor(readonly cents: number) {}
}

describe("refused at tx.put, naming the key, the path inside the value and the reason", () => {
  const circular: Record<string, unknown> = { items: [{}] };
  (circular.items as Record<string, unknown>[])[0].order = circular;
  const cases: [kind: string, value: unknown, says: string][] = [
    ["a function", () => 1, 'tx.put("orders/42"): value is a function; functions are not stored'],
    ["a method inside an object", { items: [1, 2, { total() {} }] }, 'tx.put("orders/42"): value.items[2].total is a function'],
    ["a symbol", { tag: Symbol("x") }, 'tx.put("orders/42"): value.tag is a symbol; symbols are not stored'],
    ["a symbol-keyed property", { a: { [Symbol("k")]: 1 } }, 'tx.put("orders/42"): value.a has a symbol-keyed property (Symbol(k))'],
    ["a circular reference", circular, 'tx.put("orders/42"): value.items[0].order is a circular reference (it is value again)'],
    ["a Map", { byId: new Map([[1, "a"]]) }, 'tx.put("orders/42"): value.byId is a Map; Maps are not stored'],
    ["a Set", [new Set([1])], 'tx.put("orders/42"): value[0] is a Set; Sets are not stored: use an array'],
    ["a class instance", { price: new Money(100) }, 'tx.put("orders/42"): value.price is a Money instance; class instances are not stored'],
    ["-0", { total: -0 }, 'tx.put("orders/42"): value.total is -0, which would read back as 0'],
    ["a lone surrogate", { name: "a\ud800b" }, 'tx.put("orders/42"): value.name is a string with a lone surrogate at index 1'],
    ["a lone surrogate in a property name", { ["x\udc00"]: 1 }, 'tx.put("orders/42"): value has a property name with a lone surrogate'],
    ["an array hole", { list: [1, , 3] }, 'tx.put("orders/42"): value.list[1] is a hole in the array, which would read back as undefined'],
    ["nesting beyond valueDepthMax", nested(limits.valueDepthMax + 1), `is nested deeper than valueDepthMax (${limits.valueDepthMax} levels`],
    ["another typed array", { v: new Float64Array(2) }, 'tx.put("orders/42"): value.v is a Float64Array; of the typed arrays only Uint8Array is stored'],
    ["an ArrayBuffer", new ArrayBuffer(4), 'tx.put("orders/42"): value is an ArrayBuffer'],
    ["a boxed primitive", { s: new String("x") }, 'tx.put("orders/42"): value.s is a boxed String'],
    ["an invalid Date", { at: new Date("nope") }, 'tx.put("orders/42"): value.at is an invalid Date'],
    ["a Promise", { p: Promise.resolve(1) }, 'tx.put("orders/42"): value.p is a Promise; await it'],
    ["a property named __proto__", JSON.parse('{"a": {"__proto__": 1}}'), 'tx.put("orders/42"): value.a has a property named "__proto__"'],
    ["an Array subclass", new (class Items extends Array {})(), 'tx.put("orders/42"): value is an array of class Items'],
  ];
  for (const [kind, value, says] of cases) {
    test(`${kind} is BAD_REQUEST`, () => {
      const r = refusal(value);
      expect(r.code).toBe("BAD_REQUEST");
      expect(r.message).toContain(says);
    });
  }

  test("a property name that is not an identifier is quoted in the path", () => {
    expect(refusal({ "line items": { "a-1": () => 0 } }).message).toContain('value["line items"]["a-1"] is a function');
  });

  test("undefined as the whole value is refused, pointing at tx.delete", () => {
    expect(refusal(undefined)).toEqual({ code: "BAD_REQUEST", message: 'tx.put("orders/42"): the value is undefined; use tx.delete to remove a key' });
  });

  test("a value over valueBytesMax is LIMIT_EXCEEDED naming its key and its encoded size", () => {
    const r = refusal({ blob: "x".repeat(limits.valueBytesMax) }, "blobs/1");
    expect(r.code).toBe("LIMIT_EXCEEDED");
    expect(r.message).toMatch(/^tx\.put\("blobs\/1"\): value is \d+ bytes in MessagePack, over valueBytesMax \(1048576 bytes\)$/);
  });

  test("the root can be named: orchestrated contexts and payloads", () => {
    const r = checkValue({ f() {} }, () => 'createTransaction("o-1")', encodedBytes, "context") as Refusal;
    expect(r.message).toBe('createTransaction("o-1"): context.f is a function; functions are not stored');
  });
});

describe("stored exactly: the walk accepts it and bounds its MessagePack size from above", () => {
  const accepted: [kind: string, value: unknown][] = [
    ["null", null],
    ["booleans", [true, false]],
    ["numbers, NaN and the infinities", [0, 1, -1, 1.5, 2 ** 53, -(2 ** 60), NaN, Infinity, -Infinity]],
    ["a well-formed string with astral characters", "héllo 😀"],
    ["BigInt of any size", [12345678901234567890n, 2n ** 200n, -(2n ** 200n), 0n, -1n, 2n ** 64n]],
    ["a Date", new Date("2024-02-29T12:34:56.789Z")],
    ["a Uint8Array and a Buffer", [new Uint8Array([0, 255]), Buffer.from("bytes")]],
    ["undefined inside an object and an array", { a: undefined, b: [undefined] }],
    ["an object with a null prototype", Object.assign(Object.create(null), { a: 1 })],
    ["nesting at valueDepthMax", nested(limits.valueDepthMax)],
    ["the same object twice (not circular)", (() => { const x = { n: 1 }; return { a: x, b: [x] }; })()],
    ["a nested mix", { order: { items: [{ sku: "A", qty: 2, price: 12.5, id: 2n ** 70n }], at: new Date(0), sig: new Uint8Array(3), note: null } }],
  ];
  for (const [kind, value] of accepted) {
    test(kind, () => {
      const r = put(value);
      expect(typeof r).toBe("number");
      expect(r as number).toBeGreaterThanOrEqual(encodedBytes(value));
    });
  }
});

describe("keys", () => {
  test("a key must be a non-empty, well-formed string", () => {
    expect(keyProblem("orders/42")).toBeUndefined();
    expect(keyProblem("")).toBe("a key must not be empty");
    expect(keyProblem(42)).toBe("a key must be a string, not a number");
    expect(keyProblem("a\ud800")).toContain("lone surrogate at index 1");
  });

  test("a key of keyBytesMax UTF-8 bytes is taken, one byte more is not", () => {
    expect(keyProblem("é".repeat(limits.keyBytesMax / 2))).toBeUndefined();
    expect(keyProblem("é".repeat(limits.keyBytesMax / 2) + "x")).toBe(`the key is ${limits.keyBytesMax + 1} bytes of UTF-8, over keyBytesMax (${limits.keyBytesMax} bytes)`);
  });

  test("a refused key is named in the message, shortened when long", () => {
    expect(checkWrite("delete", "", null, encodedBytes)).toEqual({ code: "BAD_REQUEST", message: 'tx.delete(""): a key must not be empty' });
    const r = checkWrite("put", "k".repeat(600), 1, encodedBytes) as Refusal;
    expect(r.code).toBe("BAD_REQUEST");
    expect(r.message).toBe(`tx.put("${"k".repeat(40)}"… (600 characters)): the key is 600 bytes of UTF-8, over keyBytesMax (512 bytes)`);
  });
});
