// pino JSON lines; every line about a transaction carries its name.
import pino, { type Logger } from "pino";

export function createLogger(sidecar: string, level: string): Logger {
  return pino({ level, base: { sidecar }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: true }));
}
