// The man page and the bash/zsh completion files know every command and `show` field the
// program has, and are well-formed (groff without warnings, bash completing for real).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { SHOW_FIELDS } from "../../src/cli/show-fields.js";
import { commandExists } from "../support/netns.js";

const root = new URL("../..", import.meta.url).pathname;
const cli = `${root}dist/src/cli/main.js`;
const bashCompletion = `${root}completions/edgetun.bash`;

/** The commands `edgetun --help` lists (help itself aside). */
function commands(): string[] {
  const help = execFileSync(process.execPath, [cli, "--help"], { encoding: "utf8" });
  const section = help.slice(help.indexOf("Commands:"));
  return [...section.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]!).filter((c) => c !== "help");
}

function complete(words: string[]): string[] {
  const script = [
    `source ${JSON.stringify(bashCompletion)}`,
    `COMP_WORDS=(${words.map((w) => JSON.stringify(w)).join(" ")})`,
    `COMP_CWORD=${words.length - 1}`,
    "_edgetun",
    'printf "%s\\n" "${COMPREPLY[@]}"',
  ].join("\n");
  return execFileSync("bash", ["-c", script], { encoding: "utf8" }).split("\n").filter(Boolean);
}

describe.skipIf(!existsSync(cli))("man page and completions", () => {
  it("the man page names every command and field, and groff formats it without warnings", () => {
    const page = readFileSync(`${root}man/edgetun.8`, "utf8");
    for (const command of commands()) expect(page, command).toContain(command);
    for (const field of SHOW_FIELDS) expect(page, field).toContain(field);
    if (commandExists("groff")) {
      const result = spawnSync("groff", ["-man", "-Tutf8", "-ww", "-z", `${root}man/edgetun.8`], {
        encoding: "utf8",
      });
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
    }
  });

  it("bash completes commands, show's targets and fields", () => {
    expect(complete(["edgetun", ""]).sort()).toEqual(
      expect.arrayContaining([...commands(), "--help", "--version"]),
    );
    expect(complete(["edgetun", "sh"])).toEqual(["show"]);
    expect(complete(["edgetun", "show", "a"])).toContain("all");
    expect(complete(["edgetun", "show", "wg0", ""]).sort()).toEqual(
      [...SHOW_FIELDS, "--json"].sort(),
    );
    expect(complete(["edgetun", "up", "--log-level", "w"])).toEqual(["warn"]);
  });

  it.skipIf(!commandExists("zsh"))("zsh parses its completion file", () => {
    const result = spawnSync("zsh", ["-n", `${root}completions/_edgetun`], { encoding: "utf8" });
    expect(result.status, result.stderr).toBe(0);
  });

  it("zsh's completion knows every command and field", () => {
    const text = readFileSync(`${root}completions/_edgetun`, "utf8");
    for (const command of commands()) expect(text, command).toContain(`'${command}:`);
    for (const field of SHOW_FIELDS) expect(text, field).toContain(field);
  });
});
