// One case of the testbed: one tunnel under one impairment level. Impair the underlay, bring
// the tunnel up on all eight nodes (timing the first packet across), check that every pod
// reaches the hub's pod, run every scenario with the daemons' cost metered, take it all down.
import { Impairment, levelName, type Level } from "./impair.js";
import {
  CostMeter,
  firstPacket,
  httpStep,
  iperf,
  ping,
  reach,
  round,
  type IperfOptions,
} from "./measure.js";
import { StepError } from "../../src/host/errors.js";
import { levelValue, type PathName, type Recorder, type Result, type Scenario } from "./report.js";
import type { Node, Topology } from "./topology.js";
import type { Tunnel } from "./tunnels.js";

export interface Settings {
  iperfSeconds: number;
  udpRate: string;
  httpSteps: number[];
  httpSeconds: number;
  httpTimeoutMs: number;
  pingCount: number;
  pingIntervalS: number;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function log(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Runs one case; returns how many of its steps failed. */
export async function runCase(
  topo: Topology,
  tunnel: Tunnel,
  level: Level,
  settings: Settings,
  recorder: Recorder,
): Promise<number> {
  const base = {
    tunnel: tunnel.name,
    level: levelName(level),
    kind: level.kind,
    value: levelValue(level),
  };
  const add = (scenario: Scenario, rest: Partial<Result>) =>
    recorder.add({ ...base, scenario, values: {}, ...rest });
  const unsupported = tunnel.supports(level);
  if (unsupported) {
    log(`  ${tunnel.name}, ${base.level}: skipped (${unsupported})`);
    add("skipped", { message: unsupported });
    return 0;
  }

  // Under delay, a pod → pod round trip crosses the relay four times.
  const delayS = level.kind === "delay" ? level.ms / 1000 : 0;
  // iperf3's setup takes some eight round trips; under delay a pod → pod one is 4 × delay.
  const setupS = 4 + 32 * delayS;
  const hub = topo.hub;
  const [first, second] = topo.edges as [Node, Node, ...Node[]];
  const impairment = new Impairment(topo, level);
  let errors = 0;
  const fail = (step: string, error: unknown) => {
    errors++;
    const text = `${step}: ${message(error)}`;
    log(`    error: ${text}`);
    add("error", { message: text });
  };

  try {
    await impairment.apply();
    const started = Date.now();
    await tunnel.upHub(level);
    let firstPacketMs = Number.NaN;
    if (tunnel.tunnelled) {
      firstPacketMs = await firstPacket(
        first.podNs,
        hub.podAddress,
        () => tunnel.upEdge(first, level),
        30 + 8 * delayS,
      );
    } else {
      await tunnel.upEdge(first, level);
    }
    await Promise.all(topo.edges.slice(1).map((edge) => tunnel.upEdge(edge, level)));
    // Under loss a handshake can take a few 5-second retries.
    await Promise.all(
      topo.edges.map((edge) =>
        reach(edge.podNs, hub.podAddress, 40 + 4 * delayS).catch((error: unknown) => {
          throw new StepError(`${message(error)}; ${tunnel.diagnose(edge)}`);
        }),
      ),
    );
    await reach(first.podNs, second.podAddress, 40 + 8 * delayS);
    const allUpMs = Date.now() - started;
    add("bring-up", { values: { firstPacketMs: round(firstPacketMs, 1), allUpMs } });
    log(
      `  ${tunnel.name}, ${base.level}: up in ${allUpMs} ms` +
        (tunnel.tunnelled ? `, first packet after ${firstPacketMs.toFixed(0)} ms` : ""),
    );
  } catch (error) {
    fail("bring-up", error);
    await takeDown(tunnel, impairment, add);
    return errors;
  }

  /** A scenario with the daemons' cost metered; an error is recorded and the case goes on. */
  const scenario = async (
    name: Scenario,
    path: PathName | undefined,
    label: string,
    body: () => Promise<{ values: Record<string, number>; detail?: unknown }>,
    extra: Partial<Result> = {},
  ): Promise<Result | null> => {
    const dead = tunnel.deadDaemon();
    if (dead) throw new StepError(dead);
    const meter = new CostMeter(tunnel.daemons()).start();
    const began = Date.now();
    try {
      const { values, detail } = await body();
      values["wallS"] = round((Date.now() - began) / 1000, 2);
      const result: Result = {
        ...base,
        scenario: name,
        ...(path ? { path } : {}),
        values,
        cost: meter.stop(),
        ...(detail !== undefined ? { detail } : {}),
        ...extra,
      };
      recorder.add(result);
      return result;
    } catch (error) {
      fail(label, error);
      return null;
    }
  };
  const paths = [
    ["edge-hub", hub],
    ["pod-pod", second],
  ] as const;

  try {
    const maxRttS = 2 + 4 * delayS;
    for (const [path, target] of paths) {
      const r = await scenario("ping", path, `ping ${path}`, async () => ({
        values: {
          ...(await ping(
            first.podNs,
            target.podAddress,
            settings.pingCount,
            settings.pingIntervalS,
            maxRttS,
          )),
        },
      }));
      if (r) {
        const v = r.values;
        log(
          `    ping ${path}: avg ${v["avgMs"]?.toFixed(3)} ms, p99 ${v["p99Ms"]?.toFixed(3)} ms, loss ${v["lossPercent"]?.toFixed(1)} %`,
        );
      }
    }
    const runs: Array<[Scenario, IperfOptions]> = [
      ["tcp1", { protocol: "tcp", streams: 1, seconds: settings.iperfSeconds, setupS }],
      ["tcp4", { protocol: "tcp", streams: 4, seconds: settings.iperfSeconds, setupS }],
      [
        "udp",
        {
          protocol: "udp",
          streams: 1,
          seconds: settings.iperfSeconds,
          setupS,
          udpRate: settings.udpRate,
        },
      ],
    ];
    for (const [path, target] of paths) {
      for (const [name, options] of runs) {
        const r = await scenario(name, path, `${name} ${path}`, async () => ({
          values: { ...(await iperf(first, target, options)) },
        }));
        if (r) {
          const v = r.values;
          log(
            `    ${name} ${path}: ${v["receivedMbps"]?.toFixed(0)} Mbit/s` +
              (name === "udp"
                ? ` (offered ${v["sentMbps"]?.toFixed(0)}, loss ${v["lostPercent"]?.toFixed(1)} %)`
                : "") +
              (r.cost
                ? `, daemons ${r.cost.cpuSeconds.toFixed(1)} CPU s, peak RSS ${r.cost.peakRssMiB} MiB`
                : ""),
          );
        }
      }
    }
    for (const concurrency of settings.httpSteps) {
      const r = await scenario(
        "http",
        undefined,
        `http ${concurrency} connections`,
        async () => {
          const { failures, ...values } = await httpStep(
            topo,
            concurrency,
            settings.httpSeconds * 1000,
            settings.httpTimeoutMs,
          );
          return Object.keys(failures).length ? { values, detail: { failures } } : { values };
        },
        { concurrency },
      );
      if (r) {
        const v = r.values;
        log(
          `    http ${concurrency} conn.: ${v["requestsPerSecond"]?.toFixed(0)} req/s, p50 ${v["p50Ms"]?.toFixed(1)} ms, p99 ${v["p99Ms"]?.toFixed(1)} ms, failed ${(100 * (v["failureRate"] ?? 0)).toFixed(2)} %`,
        );
      }
    }
    // Every byte iperf3 reports went through the hub's tunnel interface (sealed, so larger):
    // the check that no measurement took another path.
    const transfer = tunnel.hubTransfer();
    if (transfer) {
      const measured = recorder.results
        .filter((r) => r.tunnel === base.tunnel && r.level === base.level)
        .reduce((sum, r) => sum + (r.values["receivedBytes"] ?? 0), 0);
      add("tunnel-transfer", { values: { ...transfer, iperfReceivedBytes: measured } });
      if (transfer.rxBytes < 0.9 * measured) {
        fail(
          "tunnel check",
          `the hub's tunnel received ${transfer.rxBytes} bytes, less than the ${measured} iperf3 measured`,
        );
      }
    }
    // Where the tunnel picks its transport at run time, what it picked, read before take-down.
    const transport = await tunnel.transport?.();
    if (transport) {
      add("transport", { values: {}, detail: transport });
      log(`    transport: ${JSON.stringify(transport)}`);
    }
  } catch (error) {
    fail("scenarios", error);
  } finally {
    await takeDown(tunnel, impairment, add);
  }
  return errors;
}

async function takeDown(
  tunnel: Tunnel,
  impairment: Impairment,
  add: (scenario: Scenario, rest: Partial<Result>) => void,
): Promise<void> {
  await tunnel.down();
  const relay = await impairment.remove();
  if (relay) add("relay", { values: relay });
}
