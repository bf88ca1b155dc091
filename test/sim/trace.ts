// How inputs and effects read in a replayed seed's trace and in violation messages.
import type { Effect, Input } from "../../src/txn/types.ts";

export function describeInput(i: Input): string {
  switch (i.k) {
    case "client":
      return `client ${i.from.conn}#${i.from.id} ${JSON.stringify(i.req)}`;
    case "peer":
      return `peer ${JSON.stringify(i.msg)}`;
    case "tick":
      return "tick";
    case "disconnect":
      return `disconnect conn ${i.conn}`;
    case "recover":
      return `recover ${i.coordinators.map((c) => `${c.name}:${c.state}`).join(",") || "-"} / ${i.branches.map((b) => `${b.name}/${b.branch}`).join(",") || "-"}`;
    case "applied":
      return `applied ${i.name}/${i.branch}`;
    case "call_result":
      return `call_result ${i.name}#${i.index} ${i.outcome}${i.reached === false ? " (never reached)" : ""}`;
    case "sql_finished":
      return `sql_finished ${i.name}/${i.branch} ${i.ok}`;
    case "register":
      return `register ${i.service} on conn ${i.conn}`;
    case "invoked":
      return `invoked #${i.id} ${i.outcome}${i.reached === false ? " (never reached)" : ""}`;
    case "hosted_durable":
      return `hosted_durable ${i.key}`;
    case "undeliverable":
      return `undeliverable to ${i.to} (${i.code}) ${JSON.stringify(i.msg)}`;
  }
}

export function describeEffect(e: Effect): string {
  switch (e.k) {
    case "persist":
      return `persist ${JSON.stringify(e.rec)}`;
    case "send":
      return `send ${e.to}${e.ifLinked ? " (if linked)" : ""} ${JSON.stringify(e.msg)}`;
    case "reply":
      return `reply ${e.to.conn}#${e.to.id} ${JSON.stringify(e.body)}`;
    case "after":
      return `after ${describeInput(e.input)}`;
    case "call":
      return `call ${JSON.stringify(e.call)}`;
    case "invoke":
      return `invoke ${JSON.stringify(e.invoke)}`;
    case "finish_sql":
      return `finish_sql ${e.name}/${e.branch} ${e.outcome}`;
  }
}
