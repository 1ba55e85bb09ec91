// `edgetun version`, `edgetun --version` and `edgetun-go --version` print package.json's version;
// edgetun-go's command line is wireguard-go's.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { VERSION } from "../../src/cli/version.js";
import { parseWgoArguments } from "../../src/cli/wgo.js";

const repoRoot = new URL("../..", import.meta.url).pathname;
const cli = `${repoRoot}dist/src/cli/main.js`;
const wgo = `${repoRoot}dist/src/cli/wgo-entry.js`;

describe("version", () => {
  it("is package.json's", () => {
    const pkg = JSON.parse(readFileSync(`${repoRoot}package.json`, "utf8")) as { version: string };
    expect(VERSION).toBe(pkg.version);
  });

  it.skipIf(!existsSync(cli))("edgetun version, edgetun --version, edgetun-go --version", () => {
    const run = (file: string, args: string[]) =>
      spawnSync(process.execPath, [file, ...args], { encoding: "utf8" });
    expect(run(cli, ["version"]).stdout).toBe(`edgetun v${VERSION}\n`);
    expect(run(cli, ["--version"]).stdout.trim()).toBe(VERSION);
    const go = run(wgo, ["--version"]);
    expect(go.status).toBe(0);
    expect(go.stdout).toContain(`v${VERSION}`);
    const bad = run(wgo, []);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe(
      "edgetun-go: missing INTERFACE-NAME\nUsage: edgetun-go [-f/--foreground] INTERFACE-NAME\n",
    );
  });
});

describe("edgetun-go's command line (wireguard-go's)", () => {
  it.each([
    [["wg0"], {}, { kind: "run", foreground: false, interfaceName: "wg0" }],
    [["-f", "wg0"], {}, { kind: "run", foreground: true, interfaceName: "wg0" }],
    [["wg0", "--foreground"], {}, { kind: "run", foreground: true, interfaceName: "wg0" }],
    [
      ["wg0"],
      { WG_PROCESS_FOREGROUND: "1" },
      { kind: "run", foreground: true, interfaceName: "wg0" },
    ],
    [["--version"], {}, { kind: "version" }],
    [["-h"], {}, { kind: "help" }],
  ])("%j %j", (argv, env, expected) => {
    expect(parseWgoArguments(argv, env)).toEqual(expected);
  });

  it.each([
    [[], /missing INTERFACE-NAME/],
    [["a", "b"], /one INTERFACE-NAME only/],
    [["-x", "wg0"], /unknown option -x/],
    [["this-name-is-too-long"], /invalid interface name/],
    [[".."], /invalid interface name/],
    [["wg/0"], /invalid interface name/],
  ])("%j is a usage error", (argv, message) => {
    const command = parseWgoArguments(argv, {});
    expect(command.kind).toBe("usage-error");
    expect(command.kind === "usage-error" && command.message).toMatch(message);
  });
});
