// What `edgetun` exits with, by the class of what went wrong. `edgetun --help` lists these.
import { InvalidArgumentError } from "commander";
import { EdgetunError } from "../core/errors.js";
import { asAreaError } from "../host/errors.js";

/** A mistake in how a command was used, found after the argument parser's own checks. */
export class UsageError extends EdgetunError {
  constructor(message: string) {
    super("ERR_USAGE", message);
  }
}

/**
 * An option's value as `parse` reads it; whatever `parse` throws becomes commander's
 * InvalidArgumentError with the same message, which commander prints as a usage mistake.
 */
export function optionValue<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

export const EXIT_OK = 0;
/** The command failed for a reason it printed (usage, configuration, control socket, …). */
export const EXIT_FAILED = 1;
/** `edgetun demo` cannot run on this machine (not root, a tool missing). */
export const EXIT_CANNOT_RUN = 2;
/** A bug: something threw that is not an EdgetunError; its stack is printed (EX_SOFTWARE). */
export const EXIT_BUG = 70;

export const EXIT_STATUS_HELP = `
Exit status:
  ${EXIT_OK}   success
  ${EXIT_FAILED}   failed, with the reason printed: a usage mistake, a configuration file error,
      a control socket that refused or does not answer, an interface that could not be set
      up, a native addon or system call that failed
  ${EXIT_CANNOT_RUN}   edgetun demo cannot run here (it needs root, ip, namespaces and TUN)
  ${EXIT_BUG}  an internal error (a bug): printed with its stack; please report it
`;

/**
 * How to end after `error`: its message and EXIT_FAILED for an EdgetunError (or a system
 * error from Node, taken as one), its stack and EXIT_BUG for anything else.
 */
export function reportOf(error: unknown): { status: number; text: string } {
  const known = asAreaError(
    error,
    (code, message, options) => new EdgetunError(code, message, options),
  );
  if (known instanceof EdgetunError) return { status: EXIT_FAILED, text: known.message };
  const text = known instanceof Error ? (known.stack ?? known.message) : String(known);
  return { status: EXIT_BUG, text };
}

/** Ends the process after `error`, as reportOf says. */
export function exitWithReport(error: unknown): never {
  const { status, text } = reportOf(error);
  process.stderr.write(`edgetun: ${text}\n`);
  process.exit(status);
}
