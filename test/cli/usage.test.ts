// Usage mistakes, command by command: each prints what is wrong on one line and then the
// command's own usage line with a pointer to its --help (edgetun-go: wireguard-go's usage line),
// exits non-zero, and never prints the whole help or a stack. Runs the built commands without
// root: every case fails while parsing, before anything is touched.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";

const repoRoot = new URL("../..", import.meta.url).pathname;
const edgetun = `${repoRoot}dist/src/cli/main.js`;
const edgetunGo = `${repoRoot}dist/src/cli/wgo-entry.js`;
const buildMissing = existsSync(edgetun) && existsSync(edgetunGo) ? null : "needs the build";
if (buildMissing) console.warn(`usage error tests skipped: ${buildMissing} (npm run build)`);

/** argv, the first line's start (after "edgetun …: "), the command whose usage line follows. */
const edgetunCases: Array<[string[], string, string]> = [
  [["frobnicate"], "unknown command 'frobnicate'", ""],
  [["--frobnicate"], "unknown option '--frobnicate'", ""],
  [["up"], "missing required argument 'file.conf'", "up"],
  [["up", "a.conf", "b.conf"], "too many arguments for 'up'", "up"],
  [["up", "--bogus", "a.conf"], "unknown option '--bogus'", "up"],
  [["up", "-i"], "option '-i, --interface <name>' argument missing", "up"],
  [["up", "--log-level", "loud", "a.conf"], "option '--log-level <level>' argument 'loud'", "up"],
  [["up", "--metrics-listen", "nowhere:x", "a.conf"], "option '--metrics-listen", "up"],
  [["up", "--ready-peer", "not-a-key", "a.conf"], "option '--ready-peer <public-key>'", "up"],
  [["down"], "missing required argument 'name'", "down"],
  [["down", "a", "b"], "too many arguments for 'down'", "down"],
  [["show", "a", "b", "c"], "too many arguments for 'show'", "show"],
  [["show", "wg0", "nonsense"], 'unknown field "nonsense"', "show"],
  [["show", "--bogus"], "unknown option '--bogus'", "show"],
  [["syncconf", "wg0"], "missing required argument 'file.conf'", "syncconf"],
  [["syncconf"], "missing required argument 'name'", "syncconf"],
  [["strip"], "missing required argument 'file.conf'", "strip"],
  [["strip", "a", "b"], "too many arguments for 'strip'", "strip"],
  [["genkey", "extra"], "too many arguments for 'genkey'", "genkey"],
  [["pubkey", "extra"], "too many arguments for 'pubkey'", "pubkey"],
  [["genpsk", "--bogus"], "unknown option '--bogus'", "genpsk"],
  [["version", "extra"], "too many arguments for 'version'", "version"],
  [["demo", "--megabytes", "lots"], "option '--megabytes <n>' argument 'lots'", "demo"],
  [["demo", "--megabytes", "-3"], "option '--megabytes <n>' argument '-3'", "demo"],
  [["demo", "extra"], "too many arguments for 'demo'", "demo"],
  [["fleet", "frobnicate"], "unknown command 'frobnicate'", "fleet"],
  [["fleet", "add"], "missing required argument 'name'", "fleet add"],
  [["fleet", "add", "edge1", "--bogus"], "unknown option '--bogus'", "fleet add"],
  [["fleet", "remove"], "missing required argument 'name'", "fleet remove"],
  [["fleet", "list", "extra"], "too many arguments for 'list'", "fleet list"],
  [["fleet", "export", "--bogus"], "unknown option '--bogus'", "fleet export"],
];

function run(file: string, args: string[]) {
  return spawnSync(process.execPath, [file, ...args], {
    encoding: "utf8",
    timeout: 20_000,
    input: "",
  });
}

describe.skipIf(buildMissing !== null)("usage errors", () => {
  it.each(edgetunCases)("edgetun %j", (args, problem, command) => {
    const result = run(edgetun, args);
    const path = command === "" ? "edgetun" : `edgetun ${command}`;
    expect(result.status).toBe(1);
    expect(result.stdout).toBe("");
    const lines = result.stderr.split("\n");
    expect(lines, result.stderr).toHaveLength(3); // two lines, each ending in a newline
    expect(lines[0]).toContain(`${path}: ${problem}`);
    expect(lines[1]).toMatch(new RegExp(`^Usage: ${path} \\S.* \\(${path} --help for more\\)$`));
    expect(lines[2]).toBe("");
  });

  it("the usage line is the one --help starts with", () => {
    const help = run(edgetun, ["fleet", "add", "--help"]);
    const error = run(edgetun, ["fleet", "add"]);
    const usage = help.stdout.split("\n")[0]!;
    expect(usage).toMatch(/^Usage: edgetun fleet add /);
    expect(error.stderr.split("\n")[1]).toBe(`${usage} (edgetun fleet add --help for more)`);
  });

  it.each([
    [[], "missing INTERFACE-NAME"],
    [["-x", "wg0"], "unknown option -x"],
    [["wg0", "wg1"], "one INTERFACE-NAME only"],
    [["-f"], "missing INTERFACE-NAME"],
    [["name-longer-than-15"], 'invalid interface name "name-longer-than-15"'],
  ])("edgetun-go %j", (args, problem) => {
    const result = run(edgetunGo, args);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      `edgetun-go: ${problem}${problem.startsWith("invalid") ? " (1 to 15 of a-z A-Z 0-9 _ = + . -)" : ""}\n` +
        "Usage: edgetun-go [-f/--foreground] INTERFACE-NAME\n",
    );
  });
});
