// Metrics for WireGuard operators' existing tooling: prometheus_wireguard_exporter's series
// (names, labels, values) so its dashboards work unchanged; the whole /metrics text passing
// `promtool check metrics`; the shipped alert rules passing `promtool check rules` and their
// unit tests; the shipped Grafana dashboard asking only for series that edgetun serves.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  createMetricsRegistry,
  DataPathObservations,
  EventLoopWatchdog,
  DEFAULT_METRICS_PORT,
  renderMetrics,
} from "../../src/host/metrics.js";
import { ipv4Packet, pairOfNodes, type Node } from "../support/index.js";
import { commandExists } from "../support/netns.js";

const monitoring = new URL("../../configs/monitoring/", import.meta.url).pathname;
const promtoolMissing = commandExists("promtool")
  ? null
  : "needs promtool (Debian's prometheus package)";
if (promtoolMissing) console.warn(`promtool checks skipped: ${promtoolMissing}`);

function sourceFor(node: Node) {
  return {
    name: `et-${node.name}`,
    device: node.device,
    isUp: true,
    counters: { socketSendErrors: 0, tunWriteErrors: 0 },
    observations: new DataPathObservations(),
  };
}

/** A scrape after real traffic: a handshake and data both ways. */
async function scrapeWithTraffic(defaultMetrics: boolean) {
  const { net, a, b } = pairOfNodes();
  net.send("a", ipv4Packet("10.0.0.1", "10.0.0.2", "x".repeat(500)));
  net.send("b", ipv4Packet("10.0.0.2", "10.0.0.1", "reply"));
  // As the daemon's server makes it: with the watchdog behind /healthz.
  const watchdog = new EventLoopWatchdog();
  try {
    const registry = createMetricsRegistry(sourceFor(a), { defaultMetrics, watchdog });
    return { text: await renderMetrics(registry), a, b };
  } finally {
    watchdog.stop();
  }
}

/** Sample lines as (name, labels text, value). */
function samples(text: string): Array<{ name: string; labels: string; value: number }> {
  return text
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
      if (!match) throw new Error(`not a sample line: ${line}`);
      return { name: match[1]!, labels: match[2] ?? "", value: Number(match[3]) };
    });
}

describe("prometheus_wireguard_exporter's series", () => {
  it("names, labels and values: the wg show transfer and latest handshake of each peer", async () => {
    const { text, b } = await scrapeWithTraffic(false);
    const all = samples(text);
    const key = b.key.publicKey.toString("base64");
    const labels = `{interface="et-a",public_key="${key}",allowed_ips="10.0.0.2/32,fd00::2/128"}`;
    const value = (name: string, labelText: string) =>
      all.find((s) => s.name === name && s.labels === labelText)?.value;
    const peerLabels = `{interface="et-a",public_key="${key}"}`;
    const sent = value("wireguard_sent_bytes_total", labels);
    expect(sent).toBeGreaterThan(500);
    expect(sent).toBe(value("edgetun_peer_tx_wire_bytes_total", peerLabels));
    expect(value("wireguard_received_bytes_total", labels)).toBe(
      value("edgetun_peer_rx_wire_bytes_total", peerLabels),
    );
    const handshake = value("wireguard_latest_handshake_seconds", labels);
    expect(handshake).toBeGreaterThan(0);
    expect(handshake).toBe(value("edgetun_peer_latest_handshake_seconds", peerLabels));
    expect(text).toContain("# TYPE wireguard_sent_bytes_total counter");
    expect(text).toContain("# TYPE wireguard_received_bytes_total counter");
    expect(text).toContain("# TYPE wireguard_latest_handshake_seconds gauge");
  });

  it("the default port is not the exporter's 9586, so both can run on one host", () => {
    expect(DEFAULT_METRICS_PORT).not.toBe(9586);
  });
});

describe.skipIf(promtoolMissing !== null)("promtool", () => {
  it("check metrics: the whole /metrics text, prom-client's process metrics included", async () => {
    const { text } = await scrapeWithTraffic(true);
    expect(text).toContain("nodejs_active_handles ");
    expect(text).not.toContain("nodejs_active_handles_total");
    const result = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("check metrics still catches what it is there for (a gauge named _total)", () => {
    const bad = "# HELP x_total a\n# TYPE x_total gauge\nx_total 1\n";
    const result = spawnSync("promtool", ["check", "metrics"], { input: bad, encoding: "utf8" });
    expect(result.status).not.toBe(0);
  });

  it("check rules and the rules' unit tests", () => {
    const check = spawnSync("promtool", ["check", "rules", "edgetun.rules.yaml"], {
      cwd: monitoring,
      encoding: "utf8",
    });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const test = spawnSync("promtool", ["test", "rules", "edgetun.rules.test.yaml"], {
      cwd: monitoring,
      encoding: "utf8",
    });
    expect(test.status, test.stdout + test.stderr).toBe(0);
  });
});

describe("the Grafana dashboard", () => {
  it("asks only for series that edgetun serves", async () => {
    const dashboard = JSON.parse(readFileSync(`${monitoring}grafana-dashboard.json`, "utf8")) as {
      panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
      templating: { list: Array<{ query: unknown }> };
    };
    const { text } = await scrapeWithTraffic(true);
    const served = new Set(samples(text).map((s) => s.name));
    const exprs = [
      ...dashboard.panels.flatMap((panel) => panel.targets.map((target) => target.expr)),
      ...dashboard.templating.list.map((variable) => String(variable.query)),
    ];
    const asked = new Set<string>();
    for (const expr of exprs) {
      for (const match of expr.matchAll(/\b(?:edgetun|wireguard|process|nodejs)_[a-z_]+\b/g)) {
        asked.add(match[0]);
      }
    }
    expect(asked.size).toBeGreaterThan(10);
    // A histogram's series appear once something was observed; its TYPE line is always there.
    const histogramServed = (name: string) =>
      /_bucket$/.test(name) && text.includes(`# TYPE ${name.replace(/_bucket$/, "")} histogram`);
    for (const name of asked) expect(served.has(name) || histogramServed(name), name).toBe(true);
    // Every panel has a query, and the exporter's three series are on the board.
    for (const panel of dashboard.panels)
      expect(panel.targets.length, panel.title).toBeGreaterThan(0);
    for (const name of [
      "wireguard_sent_bytes_total",
      "wireguard_received_bytes_total",
      "wireguard_latest_handshake_seconds",
    ]) {
      expect(asked).toContain(name);
    }
  });
});
