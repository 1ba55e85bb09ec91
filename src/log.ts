// Logs: one JSON object per line, or a readable line on a terminal. Key material never goes
// into a log: peers appear by their public key shortened the way `wg` does.

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

export function createLogger(options: {
  level?: LogLevel;
  json?: boolean;
  write?: (line: string) => void;
  fields?: Record<string, unknown>;
}): Logger {
  const threshold = LEVELS[options.level ?? "info"];
  const json = options.json ?? !process.stderr.isTTY;
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const base = options.fields ?? {};
  const log = (level: LogLevel, message: string, fields: Record<string, unknown> = {}): void => {
    if (LEVELS[level] < threshold) return;
    const time = new Date().toISOString();
    if (json) {
      write(`${JSON.stringify({ time, level, msg: message, ...base, ...fields })}\n`);
    } else {
      const extra = Object.entries({ ...base, ...fields })
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
