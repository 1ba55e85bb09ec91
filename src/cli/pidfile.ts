// Where a running daemon leaves its pid, so that `edgetun down NAME` can find it.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { EdgetunError } from "../core/errors.js";
import { runtimeDirectoryError } from "../host/uapi.js";

export const PID_DIRECTORY = "/run/edgetun";

export function pidFile(name: string): string {
  return `${PID_DIRECTORY}/${name}.pid`;
}

/**
 * Writes this process's pid for `name`. A user without its runtime directory (not root, no
 * systemd RuntimeDirectory=) gets an error that says how to provide one.
 */
export function writePidFile(name: string): void {
  try {
    mkdirSync(PID_DIRECTORY, { recursive: true, mode: 0o755 });
    writeFileSync(pidFile(name), `${process.pid}\n`);
  } catch (error) {
    runtimeDirectoryError(PID_DIRECTORY)(error);
  }
}

export function isEdgetunProcess(pid: number): boolean {
  try {
    const commandLine = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return commandLine.includes("edgetun") || commandLine.includes("cli/main.js");
  } catch {
    return false;
  }
}

/**
 * A pid file left by an earlier instance killed without cleaning up (SIGKILL, a crash) is
 * removed; one naming a live edgetun means another daemon serves this interface.
 */
export function removeStalePidFile(name: string): void {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile(name), "utf8").trim());
  } catch {
    return;
  }
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isEdgetunProcess(pid)) {
    throw new EdgetunError(
      "ERR_INTERFACE_BUSY",
      `another edgetun daemon (pid ${pid}) already serves ${name}`,
    );
  }
  rmSync(pidFile(name), { force: true });
}

export function removePidFile(name: string): void {
  rmSync(pidFile(name), { force: true });
}
