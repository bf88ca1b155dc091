// `node --import ./test/consumer/without-kysely.mjs …`: "kysely" cannot be resolved, as for a service
// that never installed the optional peer dependency (client-runtimes.test.ts).
import { register } from "node:module";

const hook = `export async function resolve(specifier, context, next) {
  if (specifier === "kysely" || specifier.startsWith("kysely/")) {
    throw Object.assign(new Error("kysely is not installed"), { code: "ERR_MODULE_NOT_FOUND" });
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
