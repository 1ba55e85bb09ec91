// The cost of a daemon, read from /proc: CPU time and peak memory. Starting, running and ending
// processes (and the StepError they fail with) is the toolkit's: src/host/toolkit/.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { runSync } from "../../src/host/toolkit/process.js";

let clockTicks = 0;

function ticksPerSecond(): number {
  if (clockTicks === 0) {
    try {
      clockTicks = Number(runSync("getconf", ["CLK_TCK"]).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds of a process (all its threads), or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU time of a process (all its threads) in nanoseconds, from the scheduler's own accounting
 * (/proc/PID/task/TID/schedstat): fine enough for the idle cost of a daemon, where the clock
 * ticks of `cpuSeconds` (10 ms each) would read a whole second of idling as 0 or 10 ms.
 * NaN when the process is gone.
 */
export function cpuNanoseconds(pid: number): number {
  try {
    let total = 0;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // the thread ended between the listing and the read
      }
    }
    return total;
  } catch {
    return Number.NaN;
  }
}

/** Peak resident set (VmHWM) in MiB, or NaN. */
export function peakRssMiB(pid: number): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Resets VmHWM to the current RSS (clear_refs 5), so that the next peak is this scenario's. */
export function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
  } catch {
    // an older kernel: the peak then counts from the daemon's start
  }
}
