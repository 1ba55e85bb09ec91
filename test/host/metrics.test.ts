// Metrics, health endpoints and logs. Unit: two in-memory devices on a fake clock, scraped
// through the same registry the daemon serves, every figure checked against what was sent.
// Integration (root): two real daemons in network namespaces, scraped over HTTP inside them.
import { execFile, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DROP_REASONS, HANDSHAKE_FAILURE_REASONS } from "../../src/core/drops.js";
import {
  decodeKey,
  generatePresharedKey,
  generatePrivateKey,
  publicKeyOf,
} from "../../src/core/keys.js";
import { DropReporter, RateLimitedLog, Secrets, createLogger } from "../../src/host/log.js";
import { MessageType, paddedLength } from "../../src/core/messages.js";
import {
  DataPathObservations,
  MetricsServer,
  createMetricsRegistry,
  parseMetricsListen,
  parsePeerSeries,
  readiness,
  renderMetrics,
  type MetricsSource,
  type PeerSeries,
} from "../../src/host/metrics.js";
import { MetricsListenError } from "../../src/host/errors.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";
import { ipv4Packet, pairOfNodes, type Network, type Node } from "../support/index.js";

const runAsync = promisify(execFile);

// --- reading Prometheus text ---------------------------------------------------------------

interface Scrape {
  /** Value of `name` with exactly these labels (order does not matter); undefined if absent. */
  get(name: string, labels?: Record<string, string>): number | undefined;
  /** Every series of `name`. */
  series(name: string): Array<{ labels: Record<string, string>; value: number }>;
  help: Map<string, string>;
  types: Map<string, string>;
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const sorted = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`);
  return `${name}{${sorted.join(",")}}`;
}

function parseScrape(text: string): Scrape {
  const values = new Map<string, number>();
  const byName = new Map<string, Array<{ labels: Record<string, string>; value: number }>>();
  const help = new Map<string, string>();
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const comment = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (comment) {
      (comment[1] === "HELP" ? help : types).set(comment[2]!, comment[3]!);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const match of (sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[match[1]!] = match[2]!;
    }
    const value = Number(sample[3]);
    values.set(seriesKey(sample[1]!, labels), value);
    const list = byName.get(sample[1]!) ?? [];
    list.push({ labels, value });
    byName.set(sample[1]!, list);
  }
  return {
    get: (name, labels = {}) => values.get(seriesKey(name, labels)),
    series: (name) => byName.get(name) ?? [],
    help,
    types,
  };
}

// --- the in-memory pair ------------------------------------------------------------------

function sourceFor(node: Node, up = true): MetricsSource & { observations: DataPathObservations } {
  return {
    name: `et-${node.name}`,
    device: node.device,
    isUp: up,
    counters: { socketSendErrors: 0, tunWriteErrors: 0 },
    observations: new DataPathObservations(),
  };
}

async function scrape(source: MetricsSource): Promise<Scrape> {
  const registry = createMetricsRegistry(source, { defaultMetrics: false });
  return parseScrape(await renderMetrics(registry));
}

/** Transport message length for an inner packet of `length` bytes (MTU 1420). */
function wireLength(length: number): number {
  return 16 + paddedLength(length, 1420) + 16;
}

function bytesOnWire(net: Network, from: string, to: string): number {
  return net.log
    .filter((e) => e.from === from && e.to === to)
    .reduce((sum, e) => sum + e.datagram.length, 0);
}

describe("metrics over an in-memory pair", () => {
  it("--metrics-peers: all, none, or the N busiest peers get series; totals and the omitted count add up", async () => {
    const { net, a, b } = pairOfNodes({ psk: false });
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "busy"));
    for (let i = 0; i < 4; i++) {
      a.device.addPeer({ publicKey: decodeKey(publicKeyOf(generatePrivateKey())) });
    }
    const source = sourceFor(a);
    const scrapeWith = async (peerSeries: PeerSeries) =>
      parseScrape(
        await renderMetrics(createMetricsRegistry(source, { defaultMetrics: false, peerSeries })),
      );
    const iface = { interface: "et-a" };
    const all = await scrapeWith("all");
    expect(all.series("edgetun_peer_tx_packets_total")).toHaveLength(5);
    expect(all.get("edgetun_peer_series_omitted", iface)).toBe(0);
    const none = await scrapeWith("none");
    expect(none.series("edgetun_peer_tx_packets_total")).toHaveLength(0);
    expect(none.series("edgetun_peer_latest_handshake_seconds")).toHaveLength(0);
    expect(none.get("edgetun_peer_series_omitted", iface)).toBe(5);
    expect(none.get("edgetun_tx_packets_total", iface)).toBe(1);
    const one = await scrapeWith(1);
    expect(one.series("edgetun_peer_tx_packets_total")).toEqual([
      {
        labels: { interface: "et-a", public_key: b.key.publicKey.toString("base64") },
        value: 1,
      },
    ]);
    expect(one.get("edgetun_peer_series_omitted", iface)).toBe(4);
    expect(() => parsePeerSeries("some")).toThrow(/all, none or a number/);
  });

  it("traffic counters match exactly what was sent, per interface and per peer", async () => {
    const { net, a, b } = pairOfNodes({ psk: true });
    const sizes = [1, 15, 16, 100, 999, 1400];
    for (const size of sizes) net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "x".repeat(size)));
    net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", "reply"));
    const inner = sizes.map((n) => 20 + n);
    const payload = inner.reduce((s, n) => s + n, 0);

    const fromA = await scrape(sourceFor(a));
    const fromB = await scrape(sourceFor(b));
    const ifA = { interface: "et-a" };
    const peerB = { interface: "et-a", public_key: b.key.publicKey.toString("base64") };
    const peerA = { interface: "et-b", public_key: a.key.publicKey.toString("base64") };

    expect(fromA.get("edgetun_tx_packets_total", ifA)).toBe(sizes.length);
    expect(fromA.get("edgetun_tx_payload_bytes_total", ifA)).toBe(payload);
    expect(fromA.get("edgetun_peer_tx_packets_total", peerB)).toBe(sizes.length);
    expect(fromA.get("edgetun_peer_tx_payload_bytes_total", peerB)).toBe(payload);
    expect(fromB.get("edgetun_peer_rx_packets_total", peerA)).toBe(sizes.length);
    expect(fromB.get("edgetun_peer_rx_payload_bytes_total", peerA)).toBe(payload);
    expect(fromA.get("edgetun_rx_packets_total", ifA)).toBe(1);
    expect(fromA.get("edgetun_rx_payload_bytes_total", ifA)).toBe(25);

    // Wire bytes: a's one initiation (148) and its data messages, b's response (92) and its
    // reply; computed from the format and checked against the datagrams actually carried.
    const aToB = 148 + inner.reduce((s, n) => s + wireLength(n), 0);
    const bToA = 92 + wireLength(25);
    expect(bytesOnWire(net, "a", "b")).toBe(aToB);
    expect(bytesOnWire(net, "b", "a")).toBe(bToA);
    expect(fromA.get("edgetun_tx_wire_bytes_total", ifA)).toBe(aToB);
    expect(fromA.get("edgetun_peer_tx_wire_bytes_total", peerB)).toBe(aToB);
    expect(fromA.get("edgetun_rx_wire_bytes_total", ifA)).toBe(bToA);
    expect(fromB.get("edgetun_peer_rx_wire_bytes_total", peerA)).toBe(aToB);
    expect(fromB.get("edgetun_peer_tx_wire_bytes_total", peerA)).toBe(bToA);

    expect(fromA.get("edgetun_handshake_initiations_sent_total", ifA)).toBe(1);
    expect(fromB.get("edgetun_handshake_initiations_received_total", { interface: "et-b" })).toBe(
      1,
    );
    expect(fromB.get("edgetun_handshake_responses_sent_total", { interface: "et-b" })).toBe(1);
    expect(fromA.get("edgetun_handshake_responses_received_total", ifA)).toBe(1);
    expect(fromA.get("edgetun_handshakes_completed_total", ifA)).toBe(1);
    expect(fromB.get("edgetun_handshakes_completed_total", { interface: "et-b" })).toBe(1);
    expect(fromA.get("edgetun_handshakes_failed_total", ifA)).toBe(0);
    expect(fromA.get("edgetun_peers", ifA)).toBe(1);
    expect(fromA.get("edgetun_peers_with_session", ifA)).toBe(1);
    expect(fromA.get("edgetun_interface_up", ifA)).toBe(1);
    expect(fromA.get("edgetun_under_load", ifA)).toBe(0);
    expect(fromA.get("edgetun_peer_latest_handshake_seconds", peerB)).toBe(
      Math.floor(net.clock.wallMs / 1000),
    );
    expect(fromA.get("edgetun_peer_endpoint_info", { ...peerB, endpoint: "192.0.2.2:51820" })).toBe(
      1,
    );
    expect(fromA.get("edgetun_peer_endpoint_changes_total", peerB)).toBe(0);
    expect(fromA.get("edgetun_peer_keepalives_sent_total", peerB)).toBe(0);
    expect(fromA.get("edgetun_socket_send_errors_total", ifA)).toBe(0);
    expect(fromA.get("edgetun_tun_write_errors_total", ifA)).toBe(0);
  });

  it("every drop reason is always present; each kind of bad datagram moves its own", async () => {
    const { net, a, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    const captured = (type: number) =>
      Buffer.from(net.log.find((e) => e.datagram[0] === type)!.datagram);
    const initiation = captured(MessageType.HandshakeInitiation);
    const data = captured(MessageType.TransportData);
    const flip = (datagram: Buffer, offset: number) => {
      const copy = Buffer.from(datagram);
      copy[offset]! ^= 1;
      return copy;
    };
    const typeFive = Buffer.alloc(148);
    typeFive[0] = 5;
    const source = sourceFor(b);
    const ifB = { interface: "et-b" };
    const first = await scrape(source);
    for (const reason of DROP_REASONS) {
      expect(first.get("edgetun_dropped_packets_total", { ...ifB, reason }), reason).toBe(0);
    }
    expect(first.series("edgetun_dropped_packets_total")).toHaveLength(DROP_REASONS.length);

    const cases: Array<[string, Buffer, string]> = [
      ["empty datagram", Buffer.alloc(0), "bad_length"],
      ["type 5", typeFive, "unknown_type"],
      ["initiation with a flipped bit", flip(initiation, 40), "bad_mac1"],
      ["initiation replayed", initiation, "handshake_replay"],
      ["data with a flipped receiver index", flip(data, 4), "unknown_index"],
      ["data with a flipped tag", flip(data, data.length - 1), "decryption_failed"],
      ["data replayed", data, "replayed"],
    ];
    let failed = 0;
    for (const [what, datagram, reason] of cases) {
      const before = await scrape(source);
      b.device.handleDatagram(datagram, a.endpoint);
      net.run();
      const after = await scrape(source);
      for (const each of DROP_REASONS) {
        const moved =
          after.get("edgetun_dropped_packets_total", { ...ifB, reason: each })! -
          before.get("edgetun_dropped_packets_total", { ...ifB, reason: each })!;
        expect(moved, `${what}: ${each}`).toBe(each === reason ? 1 : 0);
      }
      if ((HANDSHAKE_FAILURE_REASONS as readonly string[]).includes(reason)) failed++;
      expect(after.get("edgetun_handshakes_failed_total", ifB), what).toBe(failed);
    }
    expect(failed).toBe(2);
  });

  it("readiness flips as the session comes and expires (Reject-After-Time, 180 s)", async () => {
    const { net, a, b } = pairOfNodes();
    const source = sourceFor(b);
    const aKey = a.key.publicKey.toString("base64");
    expect(readiness(sourceFor(b, false))).toEqual({
      ready: false,
      reason: "interface et-b is not up",
    });
    expect(readiness(source)).toEqual({
      ready: false,
      reason: "no peer of 1 has a session younger than 180 s",
    });

    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    expect(readiness(source).ready).toBe(true);
    expect(readiness(source, [aKey]).ready).toBe(true);
    const stranger = publicKeyOf(generatePrivateKey());
    expect(readiness(source, [aKey, stranger])).toEqual({
      ready: false,
      reason: `no session younger than 180 s with ${stranger.slice(0, 8)}… (not configured)`,
    });
    expect((await scrape(source)).get("edgetun_peers_with_session", { interface: "et-b" })).toBe(1);

    net.advance(179_000, 1_000);
    expect(readiness(source).ready).toBe(true);
    net.advance(2_000, 1_000);
    expect(readiness(source)).toEqual({
      ready: false,
      reason: "no peer of 1 has a session younger than 180 s",
    });
    expect(readiness(source, [aKey]).reason).toBe(
      `no session younger than 180 s with ${aKey.slice(0, 8)}…`,
    );
    expect((await scrape(source)).get("edgetun_peers_with_session", { interface: "et-b" })).toBe(0);

    // A new packet makes a new session: ready again.
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "again"));
    expect(readiness(source).ready).toBe(true);
    expect(readiness(sourceFor(a)).ready).toBe(true);
  });

  it("handshake round-trip time, for the sessions this side initiated", async () => {
    const { net, a, b } = pairOfNodes();
    // Hold b's response back for 37 ms of the fake clock.
    let held: Buffer | null = null;
    net.filter = (from, _to, datagram) => {
      if (from === "b" && datagram[0] === MessageType.HandshakeResponse && !held) {
        held = Buffer.from(datagram);
        return false;
      }
      return true;
    };
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    expect(held).not.toBeNull();
    net.clock.advance(37);
    const source = sourceFor(a);
    a.device.onHandshakeCompleted = (peer) => source.observations.handshakeCompleted(peer);
    a.device.handleDatagram(held!, b.endpoint);
    net.run();
    expect(b.delivered).toHaveLength(1);

    const peerB = { interface: "et-a", public_key: b.key.publicKey.toString("base64") };
    const fromA = await scrape(source);
    const bucket = (le: string) =>
      fromA.get("edgetun_peer_handshake_rtt_seconds_bucket", { ...peerB, le });
    expect(bucket("0.025")).toBe(0);
    expect(bucket("0.05")).toBe(1);
    expect(bucket("+Inf")).toBe(1);
    expect(fromA.get("edgetun_peer_handshake_rtt_seconds_count", peerB)).toBe(1);
    expect(fromA.get("edgetun_peer_handshake_rtt_seconds_sum", peerB)).toBeCloseTo(0.037, 9);
    expect(fromA.types.get("edgetun_peer_handshake_rtt_seconds")).toBe("histogram");
    // Scraping again does not count the same session twice; the responder has no RTT.
    const again = await scrape(source);
    expect(again.get("edgetun_peer_handshake_rtt_seconds_count", peerB)).toBe(1);
    expect((await scrape(sourceFor(b))).series("edgetun_peer_handshake_rtt_seconds_count")).toEqual(
      [],
    );
  });

  it("batch sizes: cumulative buckets 1, 2, 4 … 128 per operation", async () => {
    const { a } = pairOfNodes();
    const source = sourceFor(a);
    for (const size of [1, 1, 2, 3, 4, 5, 64, 65, 128]) source.observations.tunRead.observe(size);
    source.observations.udpSend.observe(7);
    const text = await scrape(source);
    const tunRead = (le: string) =>
      text.get("edgetun_batch_packets_bucket", { interface: "et-a", operation: "tun_read", le });
    expect(["1", "2", "4", "8", "16", "32", "64", "128", "+Inf"].map((le) => tunRead(le))).toEqual([
      2, 3, 5, 6, 6, 6, 7, 9, 9,
    ]);
    const labels = { interface: "et-a", operation: "tun_read" };
    expect(text.get("edgetun_batch_packets_sum", labels)).toBe(273);
    expect(text.get("edgetun_batch_packets_count", labels)).toBe(9);
    const udpSend = { interface: "et-a", operation: "udp_send" };
    expect(text.get("edgetun_batch_packets_bucket", { ...udpSend, le: "4" })).toBe(0);
    expect(text.get("edgetun_batch_packets_bucket", { ...udpSend, le: "8" })).toBe(1);
    for (const operation of ["udp_receive", "tun_write"]) {
      expect(text.get("edgetun_batch_packets_count", { interface: "et-a", operation })).toBe(0);
    }
  });

  it("names, HELP and TYPE: edgetun_ prefix, units in names, default metrics present", async () => {
    const { a } = pairOfNodes();
    const registry = createMetricsRegistry(sourceFor(a));
    const text = parseScrape(await renderMetrics(registry));
    const ours = [...text.types.keys()].filter((name) => name.startsWith("edgetun_"));
    expect(ours.length).toBeGreaterThan(30);
    for (const name of ours) {
      expect(text.help.get(name)?.length, name).toBeGreaterThan(10);
      if (text.types.get(name) === "counter") expect(name).toMatch(/_total$/);
      if (name.includes("bytes")) expect(name).toMatch(/_bytes_total$/);
    }
    expect(text.types.get("nodejs_eventloop_lag_seconds")).toBe("gauge");
    expect(text.types.get("process_cpu_seconds_total")).toBe("counter");
    // The same text as prom-client writes it itself, and the same values in its JSON.
    const { net, b } = pairOfNodes();
    net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
    const small = createMetricsRegistry(sourceFor(b), { defaultMetrics: false });
    const rendered = await renderMetrics(small);
    expect(rendered).toBe(await small.metrics());
    const json = await small.getMetricsAsJSON();
    const key = net.node("a").key.publicKey.toString("base64");
    expect(json.find((m) => m.name === "edgetun_peer_rx_packets_total")?.values).toEqual([
      { labels: { interface: "et-b", public_key: key }, value: 1 },
    ]);
    expect(
      json
        .find((m) => m.name === "edgetun_peer_handshake_rtt_seconds")
        ?.values.filter((v) => v.labels.le === "+Inf"),
    ).toEqual([]); // b responded; it has no round trip of its own
  });

  it("peers come and go with the configuration: no stale series", async () => {
    const { a, b } = pairOfNodes();
    const source = sourceFor(a);
    const key = b.key.publicKey.toString("base64");
    const registry = createMetricsRegistry(source, { defaultMetrics: false });
    expect(
      parseScrape(await renderMetrics(registry)).series("edgetun_peer_rx_packets_total"),
    ).toEqual([{ labels: { interface: "et-a", public_key: key }, value: 0 }]);
    a.device.removePeer(b.key.publicKey);
    const after = parseScrape(await renderMetrics(registry));
    expect(after.series("edgetun_peer_rx_packets_total")).toEqual([]);
    expect(after.get("edgetun_peers", { interface: "et-a" })).toBe(0);
  });
});

// --- the HTTP endpoints ----------------------------------------------------------------------

describe("the metrics server", () => {
  it("serves /metrics, /healthz and /readyz; 404 elsewhere, 405 for other methods", async () => {
    const { net, a, b } = pairOfNodes();
    const source = sourceFor(b);
    const server = await MetricsServer.listen(source, {
      host: "127.0.0.1",
      port: 0,
      defaultMetrics: false,
    });
    try {
      const url = server.url;
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const get = async (path: string, method = "GET") => {
        const response = await fetch(`${url}${path}`, { method });
        return { status: response.status, body: await response.text(), headers: response.headers };
      };
      expect(await get("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
      expect(await get("/readyz")).toMatchObject({
        status: 503,
        body: "no peer of 1 has a session younger than 180 s\n",
      });
      net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "hello"));
      expect(await get("/readyz")).toMatchObject({
        status: 200,
        body: "1 of 1 peers have a session\n",
      });
      const metrics = await get("/metrics?x=1");
      expect(metrics.status).toBe(200);
      expect(metrics.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
      const key = a.key.publicKey.toString("base64");
      expect(
        parseScrape(metrics.body).get("edgetun_peer_rx_packets_total", {
          interface: "et-b",
          public_key: key,
        }),
      ).toBe(1);
      expect(parseScrape(metrics.body).get("edgetun_event_loop_lag_seconds")).toBeLessThan(5);
      expect((await get("/")).status).toBe(404);
      expect((await get("/metricsz")).status).toBe(404);
      const post = await get("/metrics", "POST");
      expect(post.status).toBe(405);
      expect(post.headers.get("allow")).toBe("GET, HEAD");
      expect(await get("/healthz", "HEAD")).toMatchObject({ status: 200, body: "" });
    } finally {
      await server.close();
    }
  });

  it("an address in use: a clear error naming it and the way out", async () => {
    const { a } = pairOfNodes();
    const first = await MetricsServer.listen(sourceFor(a), {
      host: "127.0.0.1",
      port: 0,
      defaultMetrics: false,
    });
    try {
      const taken = first.address;
      const error = await MetricsServer.listen(sourceFor(a), { ...taken, defaultMetrics: false })
        .then(() => null)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MetricsListenError);
      expect((error as MetricsListenError).code).toBe("EADDRINUSE");
      expect((error as Error).message).toBe(
        `cannot serve metrics on 127.0.0.1:${taken.port}: the address is in use (EADDRINUSE); ` +
          "choose another address with --metrics-listen HOST:PORT, or turn metrics off with " +
          "--metrics-listen off",
      );
    } finally {
      await first.close();
    }
  });

  it("--metrics-listen values", () => {
    expect(parseMetricsListen("127.0.0.1:9586")).toEqual({ host: "127.0.0.1", port: 9586 });
    expect(parseMetricsListen("0.0.0.0:1")).toEqual({ host: "0.0.0.0", port: 1 });
    expect(parseMetricsListen("[::1]:9586")).toEqual({ host: "::1", port: 9586 });
    expect(parseMetricsListen("localhost:9100")).toEqual({ host: "localhost", port: 9100 });
    expect(parseMetricsListen("off")).toBeNull();
    // The core's endpoint parser reads it: a link-local address keeps its zone.
    expect(parseMetricsListen("[fe80::1%lo]:9586")).toEqual({ host: "fe80::1%lo", port: 9586 });
    for (const [text, problem] of [
      ["9586", /HOST:PORT/],
      [":9586", /no host/],
      ["::1:9586", /brackets/],
      ["[::1]9586", /\[ADDRESS\]:PORT/],
      ["127.0.0.1:0", /1 to 65535/],
      ["127.0.0.1:65536", /1 to 65535/],
      ["127.0.0.1:http", /1 to 65535/],
    ] as const) {
      expect(() => parseMetricsListen(text), text).toThrow(problem);
    }
  });

  it("edgetun up refuses a bad --metrics-listen or --ready-peer before reading the file", () => {
    const cli = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;
    if (!existsSync(cli)) return; // needs the build; the integration test below says so too
    const bad = spawnSync(process.execPath, [cli, "up", "x.conf", "--metrics-listen", "9586"], {
      encoding: "utf8",
    });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--metrics-listen <host:port>.*9586.*expected HOST:PORT/s);
    const peer = spawnSync(process.execPath, [cli, "up", "x.conf", "--ready-peer", "nope"], {
      encoding: "utf8",
    });
    expect(peer.status).toBe(1);
    expect(peer.stderr).toMatch(/--ready-peer.*32 bytes in base64/s);
    const help = spawnSync(process.execPath, [cli, "up", "--help"], { encoding: "utf8" });
    expect(help.stdout).toMatch(/--metrics-listen <host:port>[\s\S]*default: 127\.0\.0\.1:9825/);
  });
});

// --- logs ----------------------------------------------------------------------------------

describe("logs", () => {
  it("a logger given secrets redacts them in every form, anywhere in a line", () => {
    const key = decodeKey(generatePrivateKey());
    const psk = decodeKey(generatePresharedKey());
    const secrets = new Secrets();
    secrets.add(key);
    secrets.add(psk);
    secrets.add(Buffer.alloc(32)); // "no pre-shared key": not a secret, not redacted
    expect(secrets.size).toBe(2);
    for (const json of [true, false]) {
      const lines: string[] = [];
      const logger = createLogger({ json, level: "debug", secrets, write: (l) => lines.push(l) });
      logger.info(`key is ${key.toString("base64")}`);
      logger.debug("fields", {
        base64: key.toString("base64"),
        unpadded: `PrivateKey=${psk.toString("base64").replace(/=$/, "")}`,
        url: psk.toString("base64url"),
        hex: key.toString("hex"),
        upperHex: `0x${psk.toString("hex").toUpperCase()}`,
        bytes: Buffer.concat([Buffer.from([1, 2]), key]),
        nested: { list: [1, { deeper: psk.toString("base64") }] },
        error: new Error(`bad key ${key.toString("hex")}`),
        fine: "a public key is fine",
        zeros: Buffer.alloc(32).toString("base64"),
      });
      const text = lines.join("");
      for (const secret of [key, psk]) {
        for (const form of [
          secret.toString("base64").slice(0, 43),
          secret.toString("base64url"),
          secret.toString("hex"),
        ]) {
          expect(text.toLowerCase()).not.toContain(form.toLowerCase());
        }
      }
      expect(text.match(/\[redacted\]/g)).toHaveLength(9);
      expect(text).toContain("a public key is fine");
      expect(text).toContain("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    }
  });

  it("rate-limited lines: N per key per window, then one summary", () => {
    let now = 0;
    const lines: string[] = [];
    const logger = createLogger({ json: true, level: "debug", write: (l) => lines.push(l) });
    const limited = new RateLimitedLog(logger, { perWindow: 2, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 5; i++) limited.log("warn", "bad_mac1", "dropped", { i });
    limited.log("warn", "replayed", "dropped", { i: 99 });
    expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toMatchObject([
      { i: 0 },
      { i: 1 },
      { i: 99 },
    ]);
    now = 30_000;
    limited.flush();
    expect(lines).toHaveLength(3);
    now = 60_000;
    limited.log("warn", "bad_mac1", "dropped", { i: 5 });
    expect(JSON.parse(lines[3]!)).toMatchObject({
      level: "warn",
      msg: "suppressed 3 similar messages",
      key: "bad_mac1",
      like: "dropped",
    });
    expect(JSON.parse(lines[4]!)).toMatchObject({ i: 5 });
    limited.flush(true);
    expect(lines).toHaveLength(5); // nothing suppressed in the new windows
  });

  it("dropped packets: a summary line per reason at most every 10 s, only when they moved", () => {
    let now = 0;
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({
      json: true,
      level: "debug",
      write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>),
    });
    const reporter = new DropReporter(logger, { interface: "et0" }, { now: () => now });
    const drops: Record<string, number> = { bad_mac1: 0, queue_full: 0 };
    reporter.check(drops);
    expect(lines).toEqual([]);
    drops.bad_mac1 = 4;
    drops.queue_full = 1;
    reporter.check(drops);
    expect(lines).toMatchObject([
      { level: "debug", msg: "packets dropped", interface: "et0", reason: "bad_mac1", count: 4 },
      { level: "warn", msg: "packets dropped", reason: "queue_full", count: 1, total: 1 },
    ]);
    drops.bad_mac1 = 10;
    now = 9_999;
    reporter.check(drops);
    expect(lines).toHaveLength(2);
    now = 10_000;
    reporter.check(drops);
    expect(lines[2]).toMatchObject({ reason: "bad_mac1", count: 6, total: 10 });
    now = 30_000;
    reporter.check(drops);
    expect(lines).toHaveLength(3);
    // A flood, reported every 10 s: three lines a minute for the reason, then a count of the
    // rest when the minute is over.
    const flood: Array<Record<string, unknown>> = [];
    const floodLogger = createLogger({
      json: true,
      level: "debug",
      write: (l) => flood.push(JSON.parse(l) as Record<string, unknown>),
    });
    now = 0;
    const flooded = new DropReporter(floodLogger, {}, { now: () => now });
    const counters = { bad_mac1: 0 };
    for (let t = 0; t <= 60_000; t += 10_000) {
      now = t;
      counters.bad_mac1 += 1000;
      flooded.check(counters);
    }
    expect(flood.map((l) => [l.msg, l.total ?? l.key])).toEqual([
      ["packets dropped", 1000],
      ["packets dropped", 2000],
      ["packets dropped", 3000],
      ["suppressed 3 similar messages", "bad_mac1"],
      ["packets dropped", 7000],
    ]);
  });
});

// --- two real daemons ----------------------------------------------------------------------

const cli = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;
const skipReason =
  netnsUnavailableReason(["ping"]) ??
  (existsSync(cli) ? null : "needs the build (npm run build): the daemons run from dist/");
if (skipReason) console.warn(`metrics of real daemons skipped: ${skipReason}`);

/** A GET run inside a namespace (the server listens on that namespace's loopback). */
const FETCH_SCRIPT = `
fetch(process.argv[1]).then(async (r) => {
  process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() }));
}, (e) => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })); });
`;

class DaemonProcess {
  stderr = "";
  exit: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => (this.stderr += chunk));
    child.stdout!.resume();
    this.exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
}

describe.skipIf(skipReason !== null)("metrics of two real daemons", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-metrics-"));
  const tag = bed.id.slice(-6);
  const names = { a: `ma${tag}`, b: `mb${tag}` };
  const keys = { a: generatePrivateKey(), b: generatePrivateKey() };
  const psk = generatePresharedKey();
  const port = 9586;
  let nsA = "";
  let nsB = "";
  const daemons: DaemonProcess[] = [];

  function config(self: "a" | "b", listenPort = 51820): string {
    const other = self === "a" ? "b" : "a";
    const lines = [
      "[Interface]",
      `PrivateKey = ${keys[self]}`,
      `ListenPort = ${listenPort}`,
      `Address = 10.78.0.${self === "a" ? 1 : 2}/24`,
      "",
      "[Peer]",
      `PublicKey = ${publicKeyOf(keys[other])}`,
      `PresharedKey = ${psk}`,
      `AllowedIPs = 10.78.0.${other === "a" ? 1 : 2}/32`,
      `Endpoint = 10.77.0.${other === "a" ? 1 : 2}:51820`,
    ];
    const file = join(tmp, `${names[self]}-${listenPort}.conf`);
    writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 });
    return file;
  }

  async function start(ns: string, self: "a" | "b", extra: string[] = []) {
    const args = [cli, "up", config(self), "--interface", names[self], "--log-level", "debug"];
    const daemon = new DaemonProcess(
      bed.spawn(ns, process.execPath, [...args, "--metrics-listen", `127.0.0.1:${port}`, ...extra]),
    );
    daemons.push(daemon);
    await waitFor(
      `daemon ${names[self]}`,
      () => {
        if (!daemon.running) throw new Error(`daemon exited early:\n${daemon.stderr}`);
        return daemon.stderr.includes('"interface up"');
      },
      15_000,
    );
    return daemon;
  }

  async function get(ns: string, path: string): Promise<{ status: number; body: string }> {
    const { stdout } = await runAsync("ip", [
      "netns",
      "exec",
      ns,
      process.execPath,
      "-e",
      FETCH_SCRIPT,
      `http://127.0.0.1:${port}${path}`,
    ]);
    return JSON.parse(stdout) as { status: number; body: string };
  }

  beforeAll(() => {
    nsA = bed.namespace("a");
    nsB = bed.namespace("b");
    for (const ns of [nsA, nsB]) {
      // No IPv6 at all, so nothing but the pings below enters the tunnels.
      bed.exec(ns, "sysctl", ["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
      bed.exec(ns, "sysctl", ["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    }
    bed.link(nsA, "10.77.0.1/24", nsB, "10.77.0.2/24");
  });

  afterAll(() => {
    bed.cleanup();
    for (const name of Object.values(names)) {
      rmSync(`/var/run/wireguard/${name}.sock`, { force: true });
      rmSync(`/run/edgetun/${name}.pid`, { force: true });
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  it("counters match a known transfer; /readyz flips on the handshake; no key in the logs", async () => {
    const a = await start(nsA, "a");
    const b = await start(nsB, "b");
    expect(a.stderr).toContain(`"metrics":"http://127.0.0.1:${port}"`);

    expect(await get(nsA, "/healthz")).toEqual({ status: 200, body: "ok\n" });
    expect(await get(nsA, "/readyz")).toEqual({
      status: 503,
      body: "no peer of 1 has a session younger than 180 s\n",
    });
    expect((await get(nsB, "/readyz")).status).toBe(503);
    expect((await get(nsA, "/nothing")).status).toBe(404);

    // A second daemon on the same metrics address fails to start, and says how to avoid it.
    const clash = new DaemonProcess(
      bed.spawn(nsA, process.execPath, [
        cli,
        "up",
        config("b", 51821),
        "--interface",
        `mc${tag}`,
        "--metrics-listen",
        `127.0.0.1:${port}`,
      ]),
    );
    expect(await clash.exit).toBe(1);
    expect(clash.stderr).toContain(
      `edgetun: cannot serve metrics on 127.0.0.1:${port}: the address is in use (EADDRINUSE)`,
    );
    expect(clash.stderr).toContain("--metrics-listen off");
    expect(bed.exec(nsA, "ip", ["-o", "link", "show"])).not.toContain(`mc${tag}`);

    // 5 pings of 1000 bytes: 1028-byte IPv4 packets, 1040 padded, 1072 on the wire.
    const count = 5;
    const inner = 20 + 8 + 1000;
    const { stdout } = await runAsync("ip", [
      ...["netns", "exec", nsA, "ping", "-n", "-q", "-c", String(count), "-s", "1000"],
      ...["-i", "0.2", "-W", "3", "10.78.0.2"],
    ]);
    expect(stdout).toMatch(/5 packets transmitted, 5 received/);
    const [fromA, fromB] = await Promise.all([get(nsA, "/metrics"), get(nsB, "/metrics")]);
    const scrapeA = parseScrape(fromA.body);
    const scrapeB = parseScrape(fromB.body);
    const ifA = { interface: names.a };
    const ifB = { interface: names.b };

    for (const [s, labels] of [
      [scrapeA, ifA],
      [scrapeB, ifB],
    ] as const) {
      expect(s.get("edgetun_tx_packets_total", labels)).toBe(count);
      expect(s.get("edgetun_rx_packets_total", labels)).toBe(count);
      expect(s.get("edgetun_tx_payload_bytes_total", labels)).toBe(count * inner);
      expect(s.get("edgetun_rx_payload_bytes_total", labels)).toBe(count * inner);
      expect(s.series("edgetun_dropped_packets_total").every((d) => d.value === 0)).toBe(true);
      expect(s.get("edgetun_peers_with_session", labels)).toBe(1);
    }
    // The wire: every data message 16 + 1040 + 16, plus the handshake messages and keepalives
    // each side counted (148 an initiation, 92 a response, 32 a keepalive).
    const dataWire = count * (16 + paddedLength(inner, 1420) + 16);
    expect(dataWire).toBe(5 * 1072);
    const sent = (s: Scrape, labels: Record<string, string>, peer: Record<string, string>) =>
      dataWire +
      148 * s.get("edgetun_handshake_initiations_sent_total", labels)! +
      92 * s.get("edgetun_handshake_responses_sent_total", labels)! +
      32 * s.get("edgetun_peer_keepalives_sent_total", peer)!;
    const received = (s: Scrape, labels: Record<string, string>, peer: Record<string, string>) =>
      dataWire +
      148 * s.get("edgetun_handshake_initiations_received_total", labels)! +
      92 * s.get("edgetun_handshake_responses_received_total", labels)! +
      32 * s.get("edgetun_peer_keepalives_received_total", peer)!;
    const peerOfA = { ...ifA, public_key: publicKeyOf(keys.b) };
    const peerOfB = { ...ifB, public_key: publicKeyOf(keys.a) };
    expect(scrapeA.get("edgetun_handshake_initiations_sent_total", ifA)).toBe(1);
    expect(scrapeB.get("edgetun_handshake_responses_sent_total", ifB)).toBe(1);
    expect(scrapeA.get("edgetun_tx_wire_bytes_total", ifA)).toBe(sent(scrapeA, ifA, peerOfA));
    expect(scrapeA.get("edgetun_rx_wire_bytes_total", ifA)).toBe(received(scrapeA, ifA, peerOfA));
    expect(scrapeB.get("edgetun_tx_wire_bytes_total", ifB)).toBe(sent(scrapeB, ifB, peerOfB));
    expect(scrapeB.get("edgetun_rx_wire_bytes_total", ifB)).toBe(received(scrapeB, ifB, peerOfB));
    // What one side sent, the other received.
    expect(scrapeA.get("edgetun_tx_wire_bytes_total", ifA)).toBe(
      scrapeB.get("edgetun_rx_wire_bytes_total", ifB),
    );
    expect(scrapeB.get("edgetun_tx_wire_bytes_total", ifB)).toBe(
      scrapeA.get("edgetun_rx_wire_bytes_total", ifA),
    );
    expect(scrapeA.get("edgetun_peer_tx_payload_bytes_total", peerOfA)).toBe(count * inner);
    expect(scrapeA.get("edgetun_peer_latest_handshake_seconds", peerOfA)).toBeGreaterThan(
      Date.now() / 1000 - 60,
    );
    expect(
      scrapeA.get("edgetun_peer_endpoint_info", { ...peerOfA, endpoint: "10.77.0.2:51820" }),
    ).toBe(1);
    // The daemon timed its own initiation; the batch histograms saw the packets.
    expect(scrapeA.get("edgetun_peer_handshake_rtt_seconds_count", peerOfA)).toBe(1);
    expect(scrapeA.get("edgetun_peer_handshake_rtt_seconds_sum", peerOfA)).toBeLessThan(1);
    const batches = (s: Scrape, labels: Record<string, string>, operation: string) =>
      s.get("edgetun_batch_packets_sum", { ...labels, operation })!;
    expect(batches(scrapeB, ifB, "tun_write")).toBe(count);
    expect(batches(scrapeB, ifB, "udp_receive")).toBeGreaterThanOrEqual(count + 1);
    expect(batches(scrapeA, ifA, "tun_read")).toBeGreaterThanOrEqual(count);
    expect(scrapeA.get("nodejs_eventloop_lag_seconds")).toBeGreaterThanOrEqual(0);

    expect(await get(nsA, "/readyz")).toEqual({
      status: 200,
      body: "1 of 1 peers have a session\n",
    });
    expect(await get(nsB, "/readyz")).toEqual({
      status: 200,
      body: "1 of 1 peers have a session\n",
    });
    expect(await get(nsB, "/healthz")).toEqual({ status: 200, body: "ok\n" });

    // Garbage to b's port, for a debug line about drops; a reload, for another line.
    await runAsync("ip", [
      ...["netns", "exec", nsA, process.execPath, "-e"],
      `const s = require("node:dgram").createSocket("udp4");
       s.send(Buffer.alloc(148, 1), 51820, "10.77.0.2", () => s.close());`,
    ]);
    await waitFor("b's log of the dropped datagram", () => b.stderr.includes('"packets dropped"'));
    b.child.kill("SIGHUP");
    await waitFor("b's reload", () => b.stderr.includes('"configuration applied"'));

    for (const daemon of [a, b]) daemon.child.kill("SIGTERM");
    expect(await a.exit).toBe(0);
    expect(await b.exit).toBe(0);
    const logs = a.stderr + b.stderr;
    expect(logs).toContain('"level":"debug"');
    expect(logs).toContain('"reason":"unknown_type"');
    for (const secret of [keys.a, keys.b, psk]) {
      const raw = decodeKey(secret);
      for (const form of [raw.toString("base64").slice(0, 43), raw.toString("hex")]) {
        expect(logs.toLowerCase()).not.toContain(form.toLowerCase());
      }
    }
  }, 60_000);
});
