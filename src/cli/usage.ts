// Usage errors as one line that says what is wrong, then the command's own usage line with a
// pointer to its --help, instead of commander's whole help text: an operator who mistyped one
// argument should not have to find the mistake above a screenful of options.
import type { Command } from "commander";

/** "edgetun fleet add": the words that run `command`. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let each: Command | null = command; each; each = each.parent) names.unshift(each.name());
  return names.join(" ");
}

/** "Usage: edgetun up [options] <file.conf> (edgetun up --help for more)". */
export function usageLine(command: Command): string {
  const path = commandPath(command);
  return `Usage: ${path} ${command.usage()} (${path} --help for more)`;
}

/**
 * Makes `command` and every command under it report a usage mistake as
 * "edgetun up: missing required argument 'file.conf'" and its usage line. Called once all
 * commands are registered.
 */
export function conciseUsageErrors(command: Command): void {
  const path = commandPath(command);
  command
    .configureOutput({
      outputError: (text, write) => write(`${path}: ${text.replace(/^error: /, "")}`),
    })
    .showHelpAfterError(usageLine(command));
  for (const sub of command.commands) conciseUsageErrors(sub);
}
