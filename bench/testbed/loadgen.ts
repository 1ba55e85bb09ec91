// The load generator of the scalability test, one process per edge pod: `connections`
// keep-alive connections, each calling the service in a closed loop (next request when the
// last answer is in) from `startAt` (wall clock, so that all edges start together) for
// `durationMs`. A call fails on a connection error, a status other than 200, or no complete
// answer within `timeoutMs`; after a failure that connection pauses 100 ms (so a refused
// connection cannot spin), then reconnects. Prints one JSON line: successes, failures by
// cause, and the latency histogram of the successful calls.
//
// Own code rather than autocannon: the seven processes' latencies must merge into one exact
// step-wide p50/p99 (autocannon reports per process), and it keeps the bench free of another
// dependency.
import { Agent, request } from "node:http";
import { performance } from "node:perf_hooks";
import { Histogram } from "./hist.js";

interface Options {
  host: string;
  port: number;
  connections: number;
  startAt: number;
  durationMs: number;
  timeoutMs: number;
}

const options = JSON.parse(process.argv[2] ?? "{}") as Options;
const agent = new Agent({
  keepAlive: true,
  maxSockets: options.connections,
  maxFreeSockets: options.connections,
});
const histogram = new Histogram();
let ok = 0;
const failures: Record<string, number> = {};

function call(): Promise<void> {
  return new Promise((resolve) => {
    const started = performance.now();
    let done = false;
    const finish = (failure: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (failure === null) {
        ok++;
        histogram.record(performance.now() - started);
        resolve();
      } else {
        failures[failure] = (failures[failure] ?? 0) + 1;
        setTimeout(resolve, 100);
      }
    };
    const req = request(
      { host: options.host, port: options.port, path: "/", agent, method: "GET" },
      (response) => {
        response.resume();
        response.on("end", () =>
          finish(response.statusCode === 200 ? null : `status ${response.statusCode}`),
        );
        response.on("error", (error: NodeJS.ErrnoException) => finish(error.code ?? "error"));
      },
    );
    const timer = setTimeout(() => {
      finish("timeout");
      req.destroy();
    }, options.timeoutMs);
    req.on("error", (error: NodeJS.ErrnoException) => finish(error.code ?? "error"));
    req.end();
  });
}

async function loop(end: number): Promise<void> {
  while (Date.now() < end) await call();
}

async function main(): Promise<void> {
  const wait = options.startAt - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const started = Date.now();
  const end = started + options.durationMs;
  await Promise.all(Array.from({ length: options.connections }, () => loop(end)));
  const elapsedMs = Date.now() - started;
  agent.destroy();
  process.stdout.write(
    `${JSON.stringify({
      ok,
      failures,
      elapsedMs,
      lateStartMs: Math.max(0, started - options.startAt),
      histogram: histogram.toJSON(),
      sumMs: histogram.sumMs,
      maxMs: histogram.maxMs,
    })}\n`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`loadgen: ${(error as Error).message}\n`);
  process.exit(1);
});
