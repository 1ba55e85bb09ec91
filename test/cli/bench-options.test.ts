// Every benchmark's command line, through bench/options.ts: --help lists the options and exits
// 0, an unknown option or a bad number exits 2 naming it; all before the bench creates
// anything (no root needed: a bench that went on would fail or need namespaces).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const BENCHES: Array<{ script: string; file: string; numeric: string }> = [
  { script: "bench:scale", file: "scale.js", numeric: "--peers" },
  { script: "bench:fleet", file: "fleet.js", numeric: "--edges" },
  { script: "bench:handshake", file: "handshake.js", numeric: "--peers" },
  { script: "bench:metrics", file: "metrics-scrape.js", numeric: "--peers" },
  { script: "bench:flood", file: "flood.js", numeric: "--seconds" },
  { script: "bench:latency", file: "latency.js", numeric: "--sets" },
  { script: "fuzz", file: "fuzz.js", numeric: "--runs" },
];
const pathOf = (file: string) =>
  fileURLToPath(new URL(`../../dist/bench/${file}`, import.meta.url));
const built = BENCHES.every(({ file }) => existsSync(pathOf(file)));
if (!built)
  console.warn("bench command-line tests skipped: dist/bench is not built (npm run build)");

function run(file: string, args: string[]) {
  return spawnSync(process.execPath, [pathOf(file), ...args], {
    encoding: "utf8",
    timeout: 20_000,
  });
}

describe.skipIf(!built)("the benchmarks' command lines", () => {
  it.each(BENCHES)(
    "$script: --help, an unknown option, a bad number",
    ({ script, file, numeric }) => {
      const help = run(file, ["--help"]);
      expect(help.status, help.stderr).toBe(0);
      expect(help.stdout).toContain(`npm run ${script}`);
      expect(help.stdout).toContain(numeric);

      const unknown = run(file, ["--", "--no-such-option"]);
      expect(unknown.status, unknown.stdout).toBe(2);
      expect(unknown.stderr).toMatch(new RegExp(`^${script}: .*--no-such-option`));

      for (const bad of ["zero", "=-1", ""]) {
        const args = bad.startsWith("=") ? [`${numeric}${bad}`] : [numeric, bad];
        const result = run(file, args);
        expect(result.status, `${args.join(" ")}: ${result.stdout}`).toBe(2);
        expect(result.stderr).toContain(`${script}: ${numeric}`);
      }
    },
  );
});
