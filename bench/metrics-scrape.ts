// What a Prometheus scrape costs a hub with many peers: the time to write /metrics, how long
// the event loop is held meanwhile, and how many packets an in-process packet pump moves with
// and without scrapes going on. Every peer has a real session (a handshake this side
// initiated), counters in the billions, an endpoint and a handshake RTT.
// Run: npm run bench:metrics [-- --peers 5000]
import { monitorEventLoopDelay } from "node:perf_hooks";
import { PrivateKey } from "../src/core/crypto.js";
import { Device } from "../src/core/device.js";
import {
  DataPathObservations,
  createMetricsRegistry,
  renderMetrics,
  type MetricsSource,
} from "../src/host/metrics.js";
import type { Registry } from "prom-client";
import { benchOptions, numberOption } from "./options.js";

const options = benchOptions("bench:metrics", "what a Prometheus scrape costs a hub", {
  peers: { type: "string", default: "5000", help: "peers with live sessions" },
});
const PEERS = numberOption("bench:metrics", "peers", options.peers, { min: 1, integer: true });
const SCRAPES = 20;
const PUMP_SECONDS = 3;
/** Packets pushed through the core per event-loop turn by the pump. */
const PUMP_BATCH = 32;

function ipv4To(address: Uint8Array, length: number): Buffer {
  const packet = Buffer.alloc(length);
  packet[0] = 0x45;
  packet.writeUInt16BE(length, 2);
  packet[8] = 64;
  packet[9] = 17;
  packet.set([10, 0, 0, 1], 12);
  packet.set(address, 16);
  return packet;
}

function addressOf(i: number): Uint8Array {
  return Uint8Array.of(10, 100 + (i >> 16), (i >> 8) & 255, i & 255);
}

/** The hub and its peers, each with a session the hub initiated. */
function buildHub(): { hub: Device; observations: DataPathObservations } {
  const started = performance.now();
  const hubKey = PrivateKey.generate();
  // Handshakes arrive here faster than a real hub would take them: no cookies, please.
  const hub = new Device({ privateKey: hubKey.raw, underLoadHandshakesPerSecond: Infinity });
  const hubEndpoint = { address: "192.0.2.1", port: 51820 };
  const keys = Array.from({ length: PEERS }, () => PrivateKey.generate());
  const keysDone = performance.now();
  keys.forEach((key, i) => {
    const endpoint = { address: `198.51.${100 + (i >> 8)}.${i & 255}`, port: 40000 + (i % 20000) };
    hub.addPeer({
      publicKey: key.publicKey,
      endpoint,
      allowedIps: [{ address: addressOf(i), cidr: 32 }],
    });
    // The peer's side, only for its handshake.
    const remote = new Device({ privateKey: key.raw });
    remote.addPeer({
      publicKey: hubKey.publicKey,
      endpoint: hubEndpoint,
      allowedIps: [{ address: new Uint8Array(4), cidr: 0 }],
    });
    hub.handleTunnelPacket(ipv4To(addressOf(i), 100));
    const initiation = hub.actions.datagrams[0]!;
    hub.actions.clear();
    remote.handleDatagram(initiation, hubEndpoint);
    const response = remote.actions.datagrams[0]!;
    remote.actions.clear();
    hub.handleDatagram(response, endpoint);
    hub.actions.clear();
  });
  const handshakesDone = performance.now();
  if (hub.stats.handshakesCompleted !== PEERS) {
    throw new Error(`only ${hub.stats.handshakesCompleted} of ${PEERS} handshakes completed`);
  }
  // Counters as a long-running hub has them: ten-digit figures make the text as long as real.
  let n = 0;
  for (const peer of hub.peers.values()) {
    n++;
    peer.rxBytes = 4_000_000_000 + n * 7919;
    peer.txBytes = 3_000_000_000 + n * 104729;
    peer.rxPackets = 3_000_000 + n;
    peer.txPackets = 2_500_000 + n;
    peer.rxPayloadBytes = peer.rxBytes - 32 * peer.rxPackets;
    peer.txPayloadBytes = peer.txBytes - 32 * peer.txPackets;
    peer.keepalivesSent = 1000 + n;
    peer.keepalivesReceived = 900 + n;
    peer.endpointChanges = n % 3;
  }
  const observations = new DataPathObservations();
  for (let i = 0; i < 100_000; i++) observations.tunRead.observe(1 + (i % 128));
  console.log(
    `set-up: ${PEERS} X25519 keys in ${((keysDone - started) / 1000).toFixed(2)} s, ` +
      `${PEERS} handshakes in ${((handshakesDone - keysDone) / 1000).toFixed(2)} s`,
  );
  return { hub, observations };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

type Render = (registry: Registry) => Promise<string>;
const RENDERS: Array<[string, Render]> = [
  ["per metric with a turn of the event loop between (as served)", renderMetrics],
  ["whole registry in one go (registry.metrics())", (registry) => registry.metrics()],
];

/** A turn of the event loop, as between two HTTP requests. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Scrape times, and the longest the event loop was held while scraping back to back. */
async function scrapeTimes(registry: Registry, render: Render): Promise<void> {
  await render(registry); // warm-up
  await turn();
  const times: number[] = [];
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  for (let i = 0; i < SCRAPES; i++) {
    const start = performance.now();
    await render(registry);
    times.push(performance.now() - start);
    await turn();
  }
  delay.disable();
  times.sort((x, y) => x - y);
  console.log(
    `  scrape: p50 ${percentile(times, 50).toFixed(1)} ms, p99 ${percentile(times, 99).toFixed(1)} ms` +
      ` over ${SCRAPES}; event loop held up to ${(delay.max / 1e6).toFixed(1)} ms at a time`,
  );
}

/**
 * Packets per second through the core (route, counter, ChaCha20-Poly1305 per packet, as the
 * core's own path does), PUMP_BATCH per event-loop turn, for PUMP_SECONDS; meanwhile scrapes
 * run every `everyMs` (0: back to back) when `render` is given.
 */
async function pump(
  hub: Device,
  registry: Registry,
  render: Render | null,
  everyMs = 0,
): Promise<{ rate: number; scrapes: number; maxLagMs: number }> {
  const packets = Array.from({ length: 64 }, (_, i) => ipv4To(addressOf(i), 1400));
  let sent = 0;
  let running = true;
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const pumping = new Promise<void>((resolve) => {
    const next = (): void => {
      if (!running) return resolve();
      for (let j = 0; j < PUMP_BATCH; j++) hub.handleTunnelPacket(packets[(sent + j) % 64]!);
      sent += PUMP_BATCH;
      hub.actions.clear();
      setImmediate(next);
    };
    setImmediate(next);
  });
  let scrapes = 0;
  const scraping = (async () => {
    while (running && render) {
      const start = performance.now();
      await render(registry);
      scrapes++;
      const wait = everyMs - (performance.now() - start);
      await (wait > 0 ? new Promise((resolve) => setTimeout(resolve, wait)) : turn());
    }
  })();
  const start = performance.now();
  await new Promise((resolve) => setTimeout(resolve, PUMP_SECONDS * 1000));
  running = false;
  const seconds = (performance.now() - start) / 1000;
  const counted = sent;
  await Promise.all([pumping, scraping]);
  delay.disable();
  return { rate: counted / seconds, scrapes, maxLagMs: delay.max / 1e6 };
}

async function main(): Promise<void> {
  console.log(`metrics scrape, ${PEERS} peers, Node ${process.version}`);
  const { hub, observations } = buildHub();
  const source: MetricsSource = {
    name: "hub0",
    device: hub,
    isUp: true,
    counters: { socketSendErrors: 0, tunWriteErrors: 0 },
    observations,
  };
  const registry = createMetricsRegistry(source);
  const text = await renderMetrics(registry);
  const samples = text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length;
  console.log(
    `/metrics: ${samples.toLocaleString("en-US")} samples, ${(text.length / 1024).toFixed(0)} KiB`,
  );
  for (const [label, render] of RENDERS) {
    console.log(label);
    await scrapeTimes(registry, render);
  }
  const format = (rate: number) => Math.round(rate).toLocaleString("en-US");
  const idle = await pump(hub, registry, null);
  console.log(
    `packet pump alone: ${format(idle.rate)} packets/s ` +
      `(event loop held up to ${idle.maxLagMs.toFixed(1)} ms)`,
  );
  const runs: Array<[string, Render, number]> = [
    ["one scrape a second, as served", renderMetrics, 1000],
    ...RENDERS.map(([label, render]): [string, Render, number] => [
      `scrapes back to back, ${label}`,
      render,
      0,
    ]),
  ];
  for (const [label, render, everyMs] of runs) {
    const busy = await pump(hub, registry, render, everyMs);
    const missed = Math.max(0, (idle.rate - busy.rate) * PUMP_SECONDS);
    console.log(
      `packet pump, ${label}: ${format(busy.rate)} packets/s, ${format(missed)} fewer in ` +
        `${PUMP_SECONDS} s (${busy.scrapes} scrapes; event loop held up to ` +
        `${busy.maxLagMs.toFixed(1)} ms)`,
    );
  }
}

await main();
