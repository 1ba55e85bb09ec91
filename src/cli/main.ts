#!/usr/bin/env node
// The `edgetun` command. Its command line is defined and parsed in program.ts, with commander
// and every command's options and their parsers: some 40 ms of a freshly started process.
// `edgetun show` with nothing but an interface and a field (what people and monitoring run
// against a hub, often; issue 11 wants it under 300 ms at 5,000 peers) goes straight to show
// without them. Anything else, every mistake included, goes to program.ts, which alone
// defines the commands' usage and errors.
import { isShowField, type ShowField } from "./show-fields.js";

/** The arguments of `show`, `show NAME` or `show NAME FIELD` (a known field, no option). */
function plainShow(args: readonly string[]): { target?: string; field?: ShowField } | null {
  const [command, target, field, ...more] = args;
  if (command !== "show" || more.length > 0 || args.some((arg) => arg.startsWith("-"))) {
    return null;
  }
  if (field === undefined) return target === undefined ? {} : { target };
  return isShowField(field) ? { target, field } : null;
}

const show = plainShow(process.argv.slice(2));
if (show) {
  const { runShow } = await import("./show.js");
  await runShow(show.target, show.field, false).catch(async (error: unknown) =>
    (await import("./exit-status.js")).exitWithReport(error),
  );
} else {
  await import("./program.js");
}
