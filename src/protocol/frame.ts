// Wire frames: a 4-byte big-endian length, then one MessagePack body.
import { Packr } from "msgpackr";
import { limits } from "../limits.ts";
import { valueCodec } from "./value.ts";

// Records off: both ends speak plain maps, so any msgpack peer can talk to us. The options are the ones
// every store of user values uses (value.ts), so a value reads back as it was written.
const packr = new Packr(valueCodec);

export function encodeBody(body: unknown): Uint8Array {
  return packr.pack(body);
}

export function decodeBody(bytes: Uint8Array): unknown {
  return packr.unpack(plain(bytes));
}

export function encodeFrame(body: unknown): Uint8Array {
  const payload = packr.pack(body);
  const n = payload.length;
  const frame = new Uint8Array(4 + n);
  frame[0] = n >>> 24;
  frame[1] = (n >>> 16) & 0xff;
  frame[2] = (n >>> 8) & 0xff;
  frame[3] = n & 0xff;
  frame.set(payload, 4);
  return frame;
}

export type FrameEvent =
  | { kind: "body"; body: unknown; bytes: number }
  | { kind: "undecodable"; error: string }
  | { kind: "too_large"; length: number };

/** Reassembles frames from a byte stream. After "too_large" the stream is unusable. */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private broken = false;

  constructor(private readonly frameBytesMax: number = limits.frameBytesMax) {}

  push(chunk: Uint8Array): FrameEvent[] {
    if (this.broken) return [];
    this.buf = this.buf.length === 0 ? plain(chunk) : concat(this.buf, chunk);
    const events: FrameEvent[] = [];
    let off = 0;
    while (this.buf.length - off >= 4) {
      const b = this.buf;
      const len = ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
      if (len > this.frameBytesMax) {
        this.broken = true;
        events.push({ kind: "too_large", length: len });
        this.buf = new Uint8Array(0);
        return events;
      }
      if (this.buf.length - off - 4 < len) break;
      const body = this.buf.subarray(off + 4, off + 4 + len);
      off += 4 + len;
      try {
        events.push({ kind: "body", body: packr.unpack(body), bytes: len });
      } catch (e) {
        events.push({ kind: "undecodable", error: (e as Error).message });
      }
    }
    this.buf = off === this.buf.length ? new Uint8Array(0) : this.buf.slice(off);
    return events;
  }
}

/** The same bytes as a plain Uint8Array: bin decoded from a Buffer would come out as a Buffer. */
function plain(bytes: Uint8Array): Uint8Array {
  return bytes.constructor === Uint8Array ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
