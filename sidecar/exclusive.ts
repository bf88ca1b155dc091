// One live sidecar per data directory and per socket path.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

export class AlreadyRunningError extends Error {}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Take the data directory's pid lock, replacing one left by a dead process. */
export function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "sidecar.pid");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(path, "utf8") === String(process.pid)) unlinkSync(path);
        } catch {}
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(readFileSync(path, "utf8").trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new AlreadyRunningError(`data directory ${dir} is held by a running sidecar (pid ${pid}); stop it or use another --data`);
      }
      unlinkSync(path); // stale: its process is gone (kill -9)
    }
  }
  throw new AlreadyRunningError(`could not lock data directory ${dir}`);
}

/** Refuse a socket path a live sidecar listens on; remove a stale socket file. */
export async function claimSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  if (!existsSync(path)) return;
  const live = await new Promise<boolean>((resolve) => {
    Bun.connect({
      unix: path,
      socket: {
        open: (s) => {
          s.end();
          resolve(true);
        },
        data: () => {},
        error: () => resolve(false),
        connectError: () => resolve(false),
      },
    }).catch(() => resolve(false));
  });
  if (live) throw new AlreadyRunningError(`socket ${path} is in use by a running sidecar; stop it or use another --socket`);
  unlinkSync(path);
}
