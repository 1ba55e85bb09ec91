// What the testbed needs from the machine, checked before anything is created.
import { commandExists } from "../../src/host/toolkit/process.js";

const PACKAGE_OF: Record<string, string> = {
  ip: "iproute2",
  tc: "iproute2",
  ping: "iputils-ping",
  iperf3: "iperf3",
  nft: "nftables",
  "wireguard-go": "wireguard-go",
  wg: "wireguard-tools",
  sysctl: "procps",
  getconf: "libc-bin",
};

/** Problems that stop the run before it starts: not root, tools missing. */
export function preflightProblems(tools: string[]): string[] {
  const problems: string[] = [];
  if (process.platform !== "linux") problems.push("needs Linux (network namespaces)");
  if (process.getuid?.() !== 0) {
    problems.push("needs root: it creates network namespaces (run it with sudo, or as root)");
  }
  for (const tool of tools) {
    if (!commandExists(tool)) {
      problems.push(
        `needs ${tool}: not found in PATH (apt-get install ${PACKAGE_OF[tool] ?? tool})`,
      );
    }
  }
  return problems;
}
