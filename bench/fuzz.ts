// The long fuzzing run: the property-based targets of `npm test` (test/support/fuzz-targets.ts),
// each fed `--runs` inputs (default 1,000,000), reporting inputs tried, failures, time and
// memory (heap and RSS at the start, their highest while running, and the heap at the end).
// Run: npm run build && npm run fuzz [-- --runs 1000000 --seed 42 --target config]
import fc from "fast-check";
import { allTargets } from "../test/support/fuzz-targets.js";
import { benchOptions, numberOption } from "./options.js";

const values = benchOptions("fuzz", "the fuzz targets' long run", {
  runs: { type: "string", default: "1000000", help: "inputs per target" },
  seed: { type: "string", default: String(Date.now() % 1_000_000), help: "the generator's seed" },
  target: { type: "string", default: "", help: "only the targets whose name contains this" },
});
const RUNS = numberOption("fuzz", "runs", values.runs, { min: 1, integer: true });
const SEED = numberOption("fuzz", "seed", values.seed, { min: 0, integer: true });
const MB = 1 << 20;

async function main(): Promise<void> {
  let failures = 0;
  process.stdout.write(`seed ${SEED}, ${RUNS.toLocaleString("en")} inputs per target\n\n`);
  process.stdout.write(
    "| target | inputs | failures | seconds | heap start → peak → end (MB) | RSS start → peak (MB) |\n|---|---|---|---|---|---|\n",
  );
  for (const target of allTargets().filter((t) => t.name.includes(values.target))) {
    const start = process.memoryUsage();
    let peakHeap = start.heapUsed;
    let peakRss = start.rss;
    let tried = 0;
    const began = performance.now();
    const result = await fc.check(
      fc.asyncProperty(target.input, async (input) => {
        tried++;
        if (tried % 20_000 === 0) {
          const now = process.memoryUsage();
          peakHeap = Math.max(peakHeap, now.heapUsed);
          peakRss = Math.max(peakRss, now.rss);
        }
        await target.check(input);
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    const seconds = (performance.now() - began) / 1000;
    if (result.failed) {
      failures++;
      process.stderr.write(`${target.name}: ${fc.defaultReportMessage(result) ?? "failed"}\n`);
    }
    const end = process.memoryUsage();
    process.stdout.write(
      `| ${target.name} | ${tried.toLocaleString("en")} | ${result.failed ? 1 : 0} | ${seconds.toFixed(0)} | ` +
        `${(start.heapUsed / MB).toFixed(0)} → ${(peakHeap / MB).toFixed(0)} → ${(end.heapUsed / MB).toFixed(0)} | ` +
        `${(start.rss / MB).toFixed(0)} → ${(peakRss / MB).toFixed(0)} |\n`,
    );
  }
  process.exitCode = failures > 0 ? 1 : 0;
}

void main();
