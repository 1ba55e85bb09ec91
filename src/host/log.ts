// Logs: one JSON object per line, or a readable line on a terminal. Key material never goes
// into a log: peers appear by their public key shortened the way `wg` does, and a logger given
// the secrets it serves redacts any value that carries one (a second line of defence).
import { DROP_REASON_TABLE, isDropReason } from "../core/drops.js";

export type LogLevel = "debug" | "info" | "warn" | "error";
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(text: string): text is LogLevel {
  return text in LEVELS;
}

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** A public key as `wg` abbreviates it in its own messages: the first 8 base64 characters. */
export function shortKey(publicKeyBase64: string): string {
  return `${publicKeyBase64.slice(0, 8)}…`;
}

const REDACTED = "[redacted]";

/**
 * Private and pre-shared keys the logger must never print. Each is matched in the forms it
 * could leak in: standard and URL-safe base64 (padding or not), hex in either case, raw bytes.
 */
export class Secrets {
  private readonly raw: Buffer[] = [];
  private readonly texts = new Set<string>();
  private readonly hex = new Set<string>();

  add(key: Uint8Array): void {
    const raw = Buffer.from(key);
    // An all-zero key is how "no pre-shared key" is stored; it is no secret.
    if (raw.every((byte) => byte === 0) || this.raw.some((known) => known.equals(raw))) return;
    this.raw.push(raw);
    this.texts.add(raw.toString("base64").replace(/=+$/, ""));
    this.texts.add(raw.toString("base64url"));
    this.hex.add(raw.toString("hex"));
  }

  get size(): number {
    return this.raw.length;
  }

  /** True when `text` equals or contains a secret in any of its text forms. */
  inText(text: string): boolean {
    if (text.length < 43) return false; // shorter than the shortest form (unpadded base64)
    for (const form of this.texts) if (text.includes(form)) return true;
    const lower = text.toLowerCase();
    for (const form of this.hex) if (lower.includes(form)) return true;
    return false;
  }

  /** True when `bytes` contain a secret. */
  inBytes(bytes: Uint8Array): boolean {
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return this.raw.some((key) => buffer.includes(key));
  }

  /** `value` with every string, byte array or nested field that carries a secret replaced. */
  redact(value: unknown, depth = 0): unknown {
    if (this.raw.length === 0) return value;
    if (typeof value === "string") return this.inText(value) ? REDACTED : value;
    if (value instanceof Uint8Array) return this.inBytes(value) ? REDACTED : value;
    if (value instanceof Error) return this.redact(value.message, depth);
    if (value === null || typeof value !== "object" || depth >= 4) return value;
    if (Array.isArray(value)) return value.map((item) => this.redact(item, depth + 1));
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, this.redact(item, depth + 1)]),
    );
  }
}

export function createLogger(options: {
  level?: LogLevel;
  json?: boolean;
  write?: (line: string) => void;
  fields?: Record<string, unknown>;
  /** Keys to redact wherever they appear; may be added to after the logger is made. */
  secrets?: Secrets;
}): Logger {
  const threshold = LEVELS[options.level ?? "info"];
  const json = options.json ?? !process.stderr.isTTY;
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const base = options.fields ?? {};
  const secrets = options.secrets;
  const log = (level: LogLevel, text: string, given: Record<string, unknown> = {}): void => {
    if (LEVELS[level] < threshold) return;
    const time = new Date().toISOString();
    let message = text;
    let fields = { ...base, ...given };
    if (secrets && secrets.size > 0) {
      message = secrets.redact(message) as string;
      fields = secrets.redact(fields) as Record<string, unknown>;
    }
    if (json) {
      write(`${JSON.stringify({ time, level, msg: message, ...fields })}\n`);
    } else {
      const extra = Object.entries(fields)
        .map(
          ([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`,
        )
        .join(" ");
      write(`${time} ${level.toUpperCase().padEnd(5)} ${message}${extra ? ` ${extra}` : ""}\n`);
    }
  };
  return {
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}

/**
 * At most `perWindow` lines per key (a drop reason, say) per window; the rest are counted,
 * and one line "suppressed K similar messages" follows when the window is over.
 */
export class RateLimitedLog {
  private readonly windows = new Map<
    string,
    { start: number; written: number; suppressed: number; level: LogLevel; message: string }
  >();
  private readonly perWindow: number;
  private readonly windowMs: number;
  private readonly now: () => number;

  constructor(
    private readonly logger: Logger,
    options: { perWindow?: number; windowMs?: number; now?: () => number } = {},
  ) {
    this.perWindow = options.perWindow ?? 5;
    this.windowMs = options.windowMs ?? 60_000;
    this.now = options.now ?? (() => performance.now());
  }

  /** Logs unless `key` used up its lines in this window; true when the line was written. */
  log(
    level: LogLevel,
    key: string,
    message: string,
    fields: Record<string, unknown> = {},
  ): boolean {
    const now = this.now();
    let window = this.windows.get(key);
    if (window && now - window.start >= this.windowMs) {
      this.summarize(key, window);
      window = undefined;
    }
    if (!window) {
      window = { start: now, written: 0, suppressed: 0, level, message };
      this.windows.set(key, window);
    }
    if (window.written >= this.perWindow) {
      window.suppressed++;
      return false;
    }
    window.written++;
    this.logger[level](message, fields);
    return true;
  }

  /** Writes the summaries of windows that are over (all of them with `all`, e.g. at exit). */
  flush(all = false): void {
    const now = this.now();
    for (const [key, window] of this.windows) {
      if (all || now - window.start >= this.windowMs) this.summarize(key, window);
    }
  }

  private summarize(key: string, window: { suppressed: number; level: LogLevel; message: string }) {
    this.windows.delete(key);
    if (window.suppressed === 0) return;
    this.logger[window.level](`suppressed ${window.suppressed} similar messages`, {
      key,
      like: window.message,
    });
  }
}

/**
 * Logs how many packets were dropped, by reason, since the last report: at most once per
 * `intervalMs`, only when the counters moved, and at most a few lines per reason a minute.
 * Drops from the network are debug lines (a scan or a stale peer is not news); drops because
 * a queue was full are warnings.
 */
export class DropReporter {
  private readonly last = new Map<string, number>();
  private lastTotal = 0;
  private lastReport = -Infinity;
  private readonly lines: RateLimitedLog;
  private readonly intervalMs: number;
  private readonly now: () => number;

  constructor(
    logger: Logger,
    private readonly fields: Record<string, unknown>,
    options: { intervalMs?: number; perReasonPerMinute?: number; now?: () => number } = {},
  ) {
    this.intervalMs = options.intervalMs ?? 10_000;
    this.now = options.now ?? (() => performance.now());
    this.lines = new RateLimitedLog(logger, {
      perWindow: options.perReasonPerMinute ?? 3,
      windowMs: 60_000,
      now: this.now,
    });
  }

  /** Cheap enough for every timer tick: a sum of the counters unless a report is due. */
  check(drops: Readonly<Record<string, number>>): void {
    const now = this.now();
    if (now - this.lastReport < this.intervalMs) return;
    this.lines.flush();
    let total = 0;
    for (const reason in drops) total += drops[reason]!;
    if (total === this.lastTotal) return;
    this.lastTotal = total;
    this.lastReport = now;
    for (const reason in drops) {
      const count = drops[reason]!;
      const delta = count - (this.last.get(reason) ?? 0);
      if (delta <= 0) continue;
      this.last.set(reason, count);
      const local = isDropReason(reason) && DROP_REASON_TABLE[reason].origin === "local";
      const level = local ? "warn" : "debug";
      this.lines.log(level, reason, "packets dropped", {
        ...this.fields,
        reason,
        count: delta,
        total: count,
      });
    }
  }

  /** Writes what is still held back; for shutdown. */
  flush(): void {
    this.lines.flush(true);
  }
}
