// The `edgetun` entry (src/cli/main.ts): a plain `edgetun show` runs without loading commander
// and the other commands' option parsers; with an option, or any mistake, the command line
// goes to the commander program. NODE_DEBUG=module lists the CommonJS modules a process loads
// (commander is one). Runs the built command without root.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";

const edgetun = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;
const buildMissing = existsSync(edgetun) ? null : "needs the build";
if (buildMissing) console.warn(`entry tests skipped: ${buildMissing} (npm run build)`);

function run(args: string[]) {
  return spawnSync(process.execPath, [edgetun, ...args], {
    encoding: "utf8",
    timeout: 20_000,
    env: { ...process.env, NODE_DEBUG: "module" },
  });
}
const loadsCommander = (stderr: string) => /commander[/\\]index\.js/.test(stderr);

describe.skipIf(buildMissing !== null)("the edgetun entry", () => {
  it("runs a plain show without commander, and the same show with an option through it", () => {
    // `interfaces` prints the names whatever the options: the same output by either path. The
    // socket directory is the machine's, where other tests make and remove interfaces, so the
    // two listings are taken again (a few times at most) until they were taken at a quiet
    // moment.
    for (let attempt = 1; ; attempt++) {
      const plain = run(["show", "interfaces"]);
      expect(plain.status).toBe(0);
      expect(loadsCommander(plain.stderr)).toBe(false);
      const parsed = run(["show", "interfaces", "--json"]);
      expect(parsed.status).toBe(0);
      expect(loadsCommander(parsed.stderr)).toBe(true);
      if (plain.stdout === parsed.stdout || attempt === 5) {
        expect(plain.stdout).toBe(parsed.stdout);
        break;
      }
    }
  });

  it("leaves every mistake to the commander program", () => {
    for (const args of [
      ["show", "wg0", "nonsense"],
      ["show", "a", "b", "c"],
      ["show", "-x"],
    ]) {
      const result = run(args);
      expect(result.status, args.join(" ")).toBe(1);
      expect(loadsCommander(result.stderr), args.join(" ")).toBe(true);
      expect(result.stderr, args.join(" ")).toMatch(/^edgetun show: /m);
    }
  });
});
