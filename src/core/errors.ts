/**
 * The root of edgetun's one error hierarchy. Every error meant for a person (a bad file, a
 * control-socket request refused, an interface that cannot be set up, an addon that does not
 * load) is an EdgetunError with a stable `code` (`ERR_CONFIG_SYNTAX`, `EADDRINUSE`, …) that
 * programs and tests can rely on while the wording of `message` improves. Anything else that
 * is thrown is a bug. The core defines the base so its own errors (key text, CIDR text) share
 * it; the host's areas subclass it in src/host/errors.ts.
 */
export class EdgetunError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
