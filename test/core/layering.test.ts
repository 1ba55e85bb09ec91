// The core's no-I/O rule is enforced by the linter: a deliberate violation must fail it, and
// the real core must pass it.
import { ESLint } from "eslint";
import { describe, expect, it } from "vitest";

const root = new URL("../..", import.meta.url).pathname;

async function ruleIds(code: string, filePath: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((message) => message.ruleId ?? "fatal");
}

describe("the core layer's lint rule", () => {
  it("refuses I/O modules, timers, process and imports from the host or CLI", async () => {
    const violation = [
      'import { readFileSync } from "node:fs";',
      'import { createSocket } from "dgram";',
      'import { Daemon } from "../host/daemon.js";',
      'import { runDemo } from "../cli/demo.js";',
      "export const uses = [readFileSync, createSocket, Daemon, runDemo];",
      "export const later = () => setTimeout(() => process.exit(0), 1);",
    ].join("\n");
    const ids = await ruleIds(violation, `${root}src/core/violation.ts`);
    expect(ids.filter((id) => id === "no-restricted-imports")).toHaveLength(4);
    expect(ids.filter((id) => id === "no-restricted-globals")).toHaveLength(2);
  }, 60_000);

  it("allows the same code in the host layer", async () => {
    const code = 'import { readFileSync } from "node:fs";\nexport const read = readFileSync;\n';
    expect(await ruleIds(code, `${root}src/host/reader.ts`)).toEqual([]);
  }, 60_000);
});
