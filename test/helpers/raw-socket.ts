// A raw Unix-socket connection for tests that speak (or mangle) the wire protocol by hand.
import { decodeBody, FrameDecoder } from "../../src/protocol/frame.ts";

export interface RawResult {
  replies: unknown[];
  closedByServer: boolean;
}

/** Send bytes, collect replies until `expect` replies arrived or the server closes, bounded by timeoutMs. */
export function rawExchange(socket: string, bytes: Uint8Array, opts: { expect?: number; timeoutMs?: number; endAfterSend?: boolean } = {}): Promise<RawResult> {
  const expectN = opts.expect ?? 1;
  return new Promise((resolve, reject) => {
    const decoder = new FrameDecoder(Number.MAX_SAFE_INTEGER);
    const replies: unknown[] = [];
    let done = false;
    const finish = (closedByServer: boolean, s?: { end(): void }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s?.end();
      resolve({ replies, closedByServer });
    };
    const timer = setTimeout(() => finish(false, conn), opts.timeoutMs ?? 2_000);
    let conn: { end(): void } | undefined;
    let sent = 0;
    Bun.connect({
      unix: socket,
      socket: {
        open: (s) => {
          conn = s;
          sent = Math.max(0, s.write(bytes));
          if (opts.endAfterSend && sent >= bytes.length) s.shutdown?.();
        },
        // A large write is taken in parts: send the rest as the kernel makes room.
        drain: (s) => {
          if (sent < bytes.length) sent += Math.max(0, s.write(bytes.subarray(sent)));
        },
        data: (s, chunk) => {
          for (const ev of decoder.push(chunk)) if (ev.kind === "body") replies.push(ev.body);
          if (replies.length >= expectN) finish(false, s);
        },
        close: () => finish(true),
        error: (_s, e) => reject(e),
        connectError: (_s, e) => reject(e),
      },
    }).catch(reject);
  });
}

export { decodeBody };
