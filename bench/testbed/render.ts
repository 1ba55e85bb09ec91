// Tables and figures again from a run's JSON lines, e.g. after the report's layout changed:
//
//   node dist/bench/testbed/render.js bench/results/testbed-….jsonl
//
// Rewrites the run's .md and .svg files next to it; the JSON lines are left as they are.
import { readFileSync, writeFileSync } from "node:fs";
import { figures, markdownReport, type Meta, type Result } from "./report.js";

export function readRun(text: string): {
  meta: Meta;
  results: Result[];
  durationS: number;
  loads: number[];
} {
  let meta: Meta | null = null;
  let durationS = Number.NaN;
  const results: Result[] = [];
  const loads: number[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const record = JSON.parse(line) as { type: string } & Record<string, unknown>;
    const { type, ...rest } = record;
    if (type === "run") meta = rest as unknown as Meta;
    else if (type === "result") results.push(rest as unknown as Result);
    else if (type === "end") durationS = Number(rest["durationS"]);
    else if (type === "load") loads.push(Number(rest["loadAverage1m"]));
  }
  if (!meta) throw new Error("no run record (the first line of a testbed .jsonl)");
  return { meta, results, durationS, loads };
}

function main(files: string[]): number {
  if (files.length === 0) {
    process.stderr.write("usage: node dist/bench/testbed/render.js RUN.jsonl...\n");
    return 2;
  }
  for (const file of files) {
    const base = file.replace(/\.jsonl$/, "");
    const { meta, results, durationS, loads } = readRun(readFileSync(file, "utf8"));
    writeFileSync(`${base}.md`, markdownReport(meta, results, durationS, loads));
    process.stdout.write(`wrote ${base}.md\n`);
    for (const { name, svg } of figures(meta, results)) {
      writeFileSync(`${base}-${name}.svg`, svg);
      process.stdout.write(`wrote ${base}-${name}.svg\n`);
    }
  }
  return 0;
}

if (process.argv[1]?.endsWith("render.js")) process.exitCode = main(process.argv.slice(2));
