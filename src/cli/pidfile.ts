// Where a running daemon leaves its pid, so that `edgetun down NAME` can find it.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";

export const PID_DIRECTORY = "/run/edgetun";

export function pidFile(name: string): string {
  return `${PID_DIRECTORY}/${name}.pid`;
}

export function writePidFile(name: string): void {
  mkdirSync(PID_DIRECTORY, { recursive: true, mode: 0o755 });
  writeFileSync(pidFile(name), `${process.pid}\n`);
}

export function removePidFile(name: string): void {
  rmSync(pidFile(name), { force: true });
}
