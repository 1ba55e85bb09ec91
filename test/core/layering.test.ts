// The core's no-I/O rule is enforced by the linter: a deliberate violation must fail it, and
// the real core must pass it.
import { readFileSync, readdirSync } from "node:fs";
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

/** Every .ts file below `dir`, as paths relative to it ("fleet/etcd.ts"). */
function modulesBelow(dir: string, prefix = ""): string[] {
  return readdirSync(`${dir}/${prefix}`, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? modulesBelow(dir, `${prefix}${entry.name}/`)
      : entry.name.endsWith(".ts")
        ? [`${prefix}${entry.name}`]
        : [],
  );
}

describe("the README's module list", () => {
  const readme = readFileSync(`${root}README.md`, "utf8");
  const section = readme.slice(
    readme.indexOf("## How it is built"),
    readme.indexOf("### The data path"),
  );
  /** The bullet "- `src/LAYER/` — …", up to the blank line or the next bullet. */
  const bullet = (layer: string): string =>
    section
      .split("\n- ")
      .find((part) => part.startsWith(`\`src/${layer}/\``))
      ?.split("\n\n")[0] ?? "";

  it.each(["core", "host", "cli"])(
    "names every module of src/%s/ in its bullet, and no other",
    (layer) => {
      const text = bullet(layer);
      expect(text, `no bullet for src/${layer}/ under "How it is built"`).not.toBe("");
      const modules = modulesBelow(`${root}src/${layer}`);
      for (const module of modules) {
        const parts = module.split("/");
        expect(text, `src/${layer}/${module}`).toContain(`\`${parts.at(-1)}\``);
        for (const folder of parts.slice(0, -1)) {
          expect(text, `src/${layer}/${module}`).toContain(`\`${folder}/\``);
        }
      }
      const present = new Set(modules.map((module) => module.split("/").at(-1)));
      for (const [, named] of text.matchAll(/`([\w.-]+\.ts)`/g)) {
        expect(present.has(named!), `the README names ${named} under src/${layer}/`).toBe(true);
      }
    },
  );
});
