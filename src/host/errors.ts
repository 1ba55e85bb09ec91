/**
 * The host's errors, one class per area, all EdgetunErrors with a stable `code`. The command
 * line prints any of them as a message and picks the exit status by class (see reportOf
 * in src/cli/exit-status.ts); anything thrown that is not an EdgetunError is a bug and shows its stack.
 */
import { EdgetunError } from "../core/errors.js";
import { redactKeyShaped } from "../core/redact.js";

export { EdgetunError };

/**
 * A system error from Node or the addon (ENOENT, EACCES, EADDRINUSE, … in `code`) as the
 * EdgetunError of the area it happened in, same code and message; anything else unchanged
 * (an argument TypeError/RangeError is a bug and stays one). The one place that looks at an
 * untyped error's `code`.
 */
export function asAreaError(
  error: unknown,
  wrap: (code: string, message: string, options: ErrorOptions) => EdgetunError,
): unknown {
  if (error instanceof EdgetunError || !(error instanceof Error)) return error;
  if (error instanceof TypeError || error instanceof RangeError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return typeof code === "string" ? wrap(code, error.message, { cause: error }) : error;
}

// --- configuration files ------------------------------------------------------------------

export type ConfigErrorCode =
  | "ERR_CONFIG_SYNTAX"
  | "ERR_CONFIG_UNKNOWN_KEY"
  | "ERR_CONFIG_KEY"
  | "ERR_CONFIG_KEY_LENGTH"
  | "ERR_CONFIG_CIDR"
  | "ERR_CONFIG_DUPLICATE_PEER"
  | "ERR_CONFIG_PORT"
  | "ERR_CONFIG_MTU"
  | "ERR_CONFIG_MISSING"
  | "ERR_CONFIG_ENDPOINT"
  | "ERR_CONFIG_VALUE"
  | "ERR_CONFIG_FILE";

/**
 * A configuration problem. `message` reads `edge0.conf:7: unknown key "Foo" in [Peer]`; `line`
 * is 0 when the problem concerns the whole file, and `file` is "" when the text did not come
 * from a file (an endpoint given on the control socket), in which case `message` is `problem`.
 */
export class ConfigError extends EdgetunError {
  declare readonly code: ConfigErrorCode;

  constructor(
    code: ConfigErrorCode,
    readonly file: string,
    readonly line: number,
    problem: string,
  ) {
    // Anything key-shaped is redacted, whatever path raised the error: a line that failed to
    // parse may hold a private key (`PrivateKey: …`, a colon for the "=").
    const redacted = redactKeyShaped(problem);
    super(code, `${locationPrefix(file, line)}${redacted}`);
    this.problem = redacted;
  }

  /** The message without the "file:line: " prefix. */
  readonly problem: string;
}

/** "edge0.conf:7: ", "edge0.conf: " for the whole file, "" for text not from a file. */
export function locationPrefix(file: string, line: number): string {
  if (file === "") return "";
  return line > 0 ? `${file}:${line}: ` : `${file}: `;
}

/** A DNS failure, which may be temporary, not a bad file. */
export class EndpointResolutionError extends EdgetunError {
  constructor(
    readonly host: string,
    cause: unknown,
  ) {
    super(
      "ERR_ENDPOINT_UNRESOLVED",
      redactKeyShaped(
        `cannot resolve endpoint host ${JSON.stringify(host)}: ${describeCause(cause)}`,
      ),
      { cause },
    );
  }
}

/** A system error's message with its code in front when the message does not name it. */
export function describeCause(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && !error.message.includes(code)
      ? `${code}: ${error.message}`
      : error.message;
  }
  return String(error);
}

// --- the native addon ---------------------------------------------------------------------

/**
 * The addon is missing or does not load (`ERR_EDGETUN_ADDON_MISSING`, `…_LOAD`,
 * `…_UNSUPPORTED_PLATFORM`), or a system call it made failed: then `code` is the errno name
 * ("EPERM", "EADDRINUSE", "EBADF") and the message says what to do.
 */
export class NativeError extends EdgetunError {
  /** The negative errno of a failed system call, as Node's own system errors carry it. */
  readonly errno: number | undefined;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    const errno = (options?.cause as NodeJS.ErrnoException | undefined)?.errno;
    this.errno = typeof errno === "number" ? errno : undefined;
  }
}

// --- interface set-up ---------------------------------------------------------------------

/**
 * Addresses, routes or policy rules could not be set (`ERR_INTERFACE_SETUP`), or a route the
 * daemon would install is already there (`ERR_ROUTE_CONFLICT`).
 */
export class InterfaceSetupError extends EdgetunError {
  declare readonly code: "ERR_INTERFACE_SETUP" | "ERR_ROUTE_CONFLICT";

  constructor(
    message: string,
    code: "ERR_INTERFACE_SETUP" | "ERR_ROUTE_CONFLICT" = "ERR_INTERFACE_SETUP",
    /** The negative errno the kernel answered, when there is one. */
    readonly errno = 0,
  ) {
    super(code, message);
  }
}

// --- the control socket -------------------------------------------------------------------

/**
 * The daemon cannot open its control socket: another daemon answers there (EADDRINUSE), a
 * file that is not a socket is in the way (EEXIST), a bad name (ERR_UAPI_INTERFACE_NAME), or
 * the system refused (the errno name).
 */
export class UapiSocketError extends EdgetunError {}

/**
 * A `set=1` request the daemon refuses; `errno` (positive) goes back to the client negated.
 * It never leaves the control socket.
 */
export class UapiRequestError extends EdgetunError {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super("ERR_UAPI_REQUEST_INVALID", message);
  }
}

/** A client's request over a control socket failed: no such interface, a timeout, a refusal. */
export class UapiClientError extends EdgetunError {
  declare readonly code: "ERR_NO_INTERFACE" | "ERR_UAPI_TIMEOUT" | "ERR_UAPI_REQUEST";

  constructor(message: string, code: "ERR_NO_INTERFACE" | "ERR_UAPI_TIMEOUT" | "ERR_UAPI_REQUEST") {
    super(code, message);
  }
}

// --- metrics ------------------------------------------------------------------------------

/** The metrics address cannot be had; `code` is the errno name ("EADDRINUSE", …). */
export class MetricsListenError extends EdgetunError {}

// --- processes and namespaces (the toolkit in src/host/toolkit/) --------------------------

export type StepErrorCode =
  | "ERR_STEP_FAILED"
  | "ERR_COMMAND_FAILED"
  | "ERR_COMMAND_TIMEOUT"
  | "ERR_PROCESS_EXITED"
  | "ERR_PROCESS_NOT_READY"
  | "ERR_WAIT_TIMEOUT"
  | "ERR_LAB_CLOSED";

/**
 * A step of a scripted run failed: a command that exited non-zero or ran past its time limit
 * (the message names it and carries its stderr), a process that exited or never printed that
 * it was ready, a namespace lab already being removed. The toolkit shared by `edgetun demo`,
 * the tests and the benchmarks throws it; the benchmarks throw it for their own failed steps
 * (`ERR_STEP_FAILED`).
 */
export class StepError extends EdgetunError {
  declare readonly code: StepErrorCode;

  constructor(message: string, code: StepErrorCode = "ERR_STEP_FAILED", options?: ErrorOptions) {
    super(code, message, options);
  }
}
