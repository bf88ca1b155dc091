// Real sidecar processes for integration tests: spawn, wait for ready, kill -9, restart.
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ensureBundle } from "../../scripts/build.ts";

const root = resolve(import.meta.dir, "../..");

export function tempDir(prefix = "dtx-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface SidecarOptions {
  id: string;
  dir?: string;
  port?: number;
  peers?: string[];
  secretFile?: string;
  dbs?: string[];
  extraArgs?: string[];
  env?: Record<string, string>;
  /** The sidecar serves HTTPS (--tls-cert/--tls-key): probe /readyz over https. */
  tls?: boolean;
}

export class SidecarProcess {
  readonly dir: string;
  readonly socket: string;
  readonly data: string;
  port = 0;
  proc?: Subprocess<"ignore", "pipe", "pipe">;
  output = "";
  private exited?: Promise<number>;

  constructor(readonly opts: SidecarOptions) {
    this.dir = opts.dir ?? tempDir(`dtx-${opts.id}-`);
    this.socket = join(this.dir, "sidecar.sock");
    this.data = join(this.dir, "data");
  }

  args(): string[] {
    const a = ["sidecar", "--id", this.opts.id, "--socket", this.socket, "--data", this.data, "--port", String(this.opts.port ?? this.port ?? 0), "--log-level", "info"];
    for (const p of this.opts.peers ?? []) a.push("--peer", p);
    if (this.opts.secretFile) a.push("--secret-file", this.opts.secretFile);
    for (const d of this.opts.dbs ?? []) a.push("--db", d);
    return [...a, ...(this.opts.extraArgs ?? [])];
  }

  /** Spawn and resolve once /readyz answers 200. The first start picks a free port and keeps it. */
  async start(timeoutMs = 15_000): Promise<this> {
    this.output = "";
    // The bundle users run (npm start, the image), rebuilt first if a source file is newer.
    const proc = Bun.spawn([process.execPath, await ensureBundle(), ...this.args()], {
      cwd: root,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, DTX_LOG_LEVEL: "info", ...this.opts.env },
    });
    this.proc = proc;
    this.exited = proc.exited;
    const readyLine = new Promise<number>((resolveReady, rejectReady) => {
      let settled = false;
      const res = (port: number) => {
        settled = true;
        resolveReady(port);
      };
      const rej = (e: Error) => {
        if (!settled) rejectReady(e);
        settled = true;
      };
      const timer = setTimeout(() => rej(new Error(`sidecar ${this.opts.id} not ready within ${timeoutMs} ms:\n${this.output}`)), timeoutMs);
      const pump = async (stream: ReadableStream<Uint8Array>) => {
        const dec = new TextDecoder();
        for await (const chunk of stream) {
          const text = dec.decode(chunk, { stream: true });
          this.output += text;
          if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
          const m = /"port":(\d+)[^\n]*"msg":"ready"/.exec(this.output);
          if (m && !settled) {
            clearTimeout(timer);
            res(Number(m[1]));
          }
        }
      };
      void pump(proc.stdout);
      void pump(proc.stderr);
      proc.exited.then((code) => {
        clearTimeout(timer);
        rej(new Error(`sidecar ${this.opts.id} exited with ${code} before ready:\n${this.output}`));
      });
    });
    this.port = await readyLine;
    // Keep the port across restarts so peers and tests can find it again.
    this.opts.port = this.port;
    await waitFor(async () => (await fetch(`${this.baseUrl}/readyz`, { tls: { rejectUnauthorized: false } } as RequestInit)).status === 200, timeoutMs, "readyz");
    return this;
  }

  get baseUrl(): string {
    return `${this.opts.tls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  async kill9(): Promise<void> {
    if (!this.proc) return;
    this.proc.kill(9);
    await this.exited;
    this.proc = undefined;
  }

  async sigterm(): Promise<number> {
    if (!this.proc) return 0;
    this.proc.kill("SIGTERM");
    const code = await this.exited!;
    this.proc = undefined;
    return code;
  }

  async restart(): Promise<this> {
    await this.kill9();
    return this.start();
  }

  async cleanup(): Promise<void> {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Poll a condition until it holds, or fail after timeoutMs naming what was awaited. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      if (await cond()) return;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${lastErr}` : ""}`);
    await Bun.sleep(intervalMs); // the poll interval of this bounded wait
  }
}
