// wg-quick's PreUp, PostUp, PreDown and PostDown: bash snippets run one after the other, `%i`
// replaced by the interface name, as wg-quick runs them. They carry the NAT and firewall rules
// of real hubs and the "PostUp = wg set %i private-key …" pattern.
import { spawn } from "node:child_process";
import { EdgetunError } from "../core/errors.js";
import type { Logger } from "./log.js";

export type HookPhase = "PreUp" | "PostUp" | "PreDown" | "PostDown";

export class HookError extends EdgetunError {
  constructor(
    readonly phase: HookPhase,
    readonly command: string,
    readonly status: number | null,
    readonly signal: NodeJS.Signals | null,
    reason?: string,
  ) {
    super(
      "ERR_HOOK_FAILED",
      `${phase} hook failed (${reason ?? (signal ? `killed by ${signal}` : `exit status ${status}`)}): ${command}`,
    );
  }
}

/** `%i` → the interface name, everywhere in the snippet (wg-quick's `${hook//%i/$INTERFACE}`). */
export function expandHook(command: string, interfaceName: string): string {
  return command.replaceAll("%i", interfaceName);
}

/**
 * Runs one phase's snippets in order with `bash -c`, each waited for; the first that fails
 * stops the rest and throws a HookError. Their output goes to our stderr (stdout stays the
 * command's own), and each is logged first, as wg-quick echoes `[#] snippet`.
 */
export async function runHooks(
  phase: HookPhase,
  commands: readonly string[],
  interfaceName: string,
  logger: Logger,
): Promise<void> {
  for (const written of commands) {
    const command = expandHook(written, interfaceName);
    logger.info(`running ${phase} hook`, { interface: interfaceName, command });
    await new Promise<void>((resolve, reject) => {
      const child = spawn("bash", ["-c", command], {
        stdio: ["ignore", process.stderr, process.stderr],
      });
      child.on("error", (error) =>
        reject(new HookError(phase, command, null, null, `cannot run bash: ${error.message}`)),
      );
      child.on("exit", (status, signal) => {
        if (status === 0) resolve();
        else reject(new HookError(phase, command, status, signal));
      });
    });
  }
}
