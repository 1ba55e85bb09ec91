// OpenVPN as a testbed tunnel, for the comparison the seed study made (WireGuard against
// OpenVPN on container edge nodes): the distribution's openvpn 2.6, one foreground process per
// node, so that its CPU time and memory are the tunnel's cost as with the userspace WireGuards.
//
// The hub is a UDP server in `topology subnet` on the hub's underlay address. Each edge is a
// client of it; under delay its `remote` is its own delay-relay socket, so every impairment
// level applies as it does to the WireGuard tunnels. Addresses are fixed, not pooled: the
// client-config-dir file of each edge (keyed by its certificate's CN) pushes its tunnel address
// and declares its pod CIDR (`iroute`), and the hub routes each pod CIDR into its tun. Pod →
// pod therefore leaves OpenVPN at the hub and re-enters it through the hub's kernel, as with
// the WireGuard tunnels (no `client-to-client` shortcut inside the daemon), and the hub's tun
// counters see every pod packet.
//
// No CA: every node has a self-signed EC certificate made with `openssl` in the run's keys
// directory, and each side pins the other's by its SHA-256 fingerprint (`peer-fingerprint`,
// OpenVPN 2.6 and later).
import { spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hubEndpointFor, type Level } from "./impair.js";
import { NodeTunnels, START_TIMEOUT_MS } from "./node-tunnels.js";
import { StepError } from "../../src/host/errors.js";
import { commandExists, nsSpawn, type Proc, runSync } from "../../src/host/toolkit/process.js";
import { HUB_PORT, TUNNEL_MTU, type Node, type Topology } from "./topology.js";
import type { Keys } from "./tunnels.js";

/** OpenVPN logs this once its tun is up with its routes, and (a client) it is connected. */
const READY = /Initialization Sequence Completed/;
/** An edge's start includes its TLS handshake with the hub, across loss or delay. */
const CONNECT_TIMEOUT_MS = 60_000;
/** The prefix length of the tunnel subnet, as the other tunnels configure it. */
const TUNNEL_PREFIX = 24;
const LOG_LINES = 6;

/** Why OpenVPN cannot run here, or null. */
export function openVpnUnavailable(): string | null {
  if (!commandExists("openvpn")) return "openvpn is not installed (apt-get install openvpn)";
  if (!commandExists("openssl")) return "openssl is not installed (apt-get install openssl)";
  // Older releases exit with status 1 after printing their version: read stdout either way.
  const version = spawnSync("openvpn", ["--version"], { encoding: "utf8", timeout: 5000 });
  const match = /OpenVPN (\d+)\.(\d+)/.exec(version.stdout ?? "");
  if (!match) return `cannot tell openvpn's version (openvpn --version: ${version.stdout})`;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  if (major < 2 || (major === 2 && minor < 6)) {
    return `openvpn ${major}.${minor} is too old: peer-fingerprint needs 2.6 or later`;
  }
  return null;
}

/** A prefix length as OpenVPN writes it: 24 → "255.255.255.0". */
export function netmask(prefix: number): string {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join(".");
}

/** A CIDR as OpenVPN writes a network: "10.244.1.0/24" → "10.244.1.0 255.255.255.0". */
export function networkAndMask(cidr: string): string {
  const [network, bits] = cidr.split("/");
  return `${network} ${netmask(Number(bits ?? 32))}`;
}

/** A path as one OpenVPN configuration argument, whatever the temporary directory holds. */
function quoted(path: string): string {
  return `"${path.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

interface Credentials {
  cert: string;
  key: string;
  fingerprint: string;
}

export class OpenVpnTunnels extends NodeTunnels {
  readonly name = "openvpn";
  private readonly dir: string;
  private readonly ccd: string;
  private readonly credentialsOf = new Map<Node, Credentials>();

  /** Makes every node's certificate once per run, before any case is timed. */
  constructor(topo: Topology, keys: Keys) {
    super(topo, keys, "o");
    this.dir = join(keys.dir, "openvpn");
    this.ccd = join(this.dir, "ccd");
    mkdirSync(this.ccd, { recursive: true, mode: 0o700 });
    for (const node of topo.nodes) {
      const cert = join(this.dir, `${node.label}.crt`);
      const key = join(this.dir, `${node.label}.key`);
      // prime256v1: the curve every OpenSSL build has; the key only signs the TLS handshake.
      runSync("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "30",
        "-subj",
        `/CN=${node.label}`,
      ]);
      const fingerprint = new X509Certificate(readFileSync(cert)).fingerprint256;
      this.credentialsOf.set(node, { cert, key, fingerprint });
    }
  }

  private credentials(node: Node): Credentials {
    return this.credentialsOf.get(node)!;
  }

  /** What hub and edges share. */
  private commonOptions(node: Node): string[] {
    const { cert, key } = this.credentials(node);
    return [
      `dev ${this.ifname(node)}`,
      // The testbed's interface names do not start with "tun": say which kind it is.
      "dev-type tun",
      "proto udp",
      `tun-mtu ${TUNNEL_MTU}`,
      `cert ${quoted(cert)}`,
      `key ${quoted(key)}`,
      // OpenVPN 2.6's default list, written out so that a later default cannot change the
      // figures: the hub takes the first the edge also offers, AES-256-GCM, which is what an
      // operator gets (and, with AES-NI, OpenVPN's fastest; WireGuard has ChaCha20-Poly1305).
      "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
      "allow-compression no",
      // The userspace data path, as Debian's openvpn runs without the ovpn-dco module: the
      // daemon's CPU time is the tunnel's work, whether or not a DCO module is loaded here.
      "disable-dco",
      // Connections, pushed options and errors; nothing per packet.
      "verb 3",
    ];
  }

  private async start(node: Node, options: string[], timeoutMs: number): Promise<void> {
    const file = join(this.dir, `${node.label}.conf`);
    writeFileSync(file, `${options.join("\n")}\n`, { mode: 0o600 });
    // Logs to stdout, kept by Proc: the readiness line arrives as it is written.
    const proc = nsSpawn(node.ns, `openvpn on ${node.label}`, "openvpn", ["--config", file]);
    this.procs.set(node, proc);
    this.started.add(node);
    let line: string;
    try {
      line = await proc.waitForLine(READY, timeoutMs);
    } catch (error) {
      const why = proc.running ? (error as Error).message : `${proc.label} exited`;
      throw new StepError(`${why}; its log: ${this.lastWords(proc)}`);
    }
    // "… Completed With Errors": an address or route could not be set.
    if (/With Errors/.test(line)) {
      throw new StepError(`${proc.label} started with errors: ${this.lastWords(proc)}`);
    }
  }

  async upHub(): Promise<void> {
    const hub = this.topo.hub;
    const mask = netmask(TUNNEL_PREFIX);
    for (const edge of this.topo.edges) {
      const lines = [
        `ifconfig-push ${edge.tunnelAddress} ${mask}`,
        `iroute ${networkAndMask(edge.podCidr)}`,
      ];
      writeFileSync(join(this.ccd, edge.label), `${lines.join("\n")}\n`);
    }
    const options = [
      ...this.commonOptions(hub),
      "mode server",
      "tls-server",
      `local ${hub.underlayAddress}`,
      `port ${HUB_PORT}`,
      "topology subnet",
      `ifconfig ${hub.tunnelAddress} ${mask}`,
      // The hub's own routes to the pod CIDRs, and the edges' routes, point into the tunnel.
      `route-gateway ${hub.tunnelAddress}`,
      'push "topology subnet"',
      `push "route-gateway ${hub.tunnelAddress}"`,
      ...this.topo.edges.map((edge) => `route ${networkAndMask(edge.podCidr)}`),
      `client-config-dir ${quoted(this.ccd)}`,
      // Only the seven edges, each with its fixed address: no pool to fall back on.
      "ccd-exclusive",
      // Pings every 10 s, a peer silent for 60 s is restarted; pushed to the edges too.
      "keepalive 10 60",
      // ECDHE only: no Diffie-Hellman parameters to generate.
      "dh none",
      "<peer-fingerprint>",
      ...this.topo.edges.map((edge) => this.credentials(edge).fingerprint),
      "</peer-fingerprint>",
    ];
    await this.start(hub, options, START_TIMEOUT_MS);
  }

  async upEdge(edge: Node, level: Level): Promise<void> {
    const endpoint = hubEndpointFor(level, edge, this.topo);
    const colon = endpoint.lastIndexOf(":");
    const options = [
      ...this.commonOptions(edge),
      // pull (the address, the topology and the gateway from the hub) and tls-client.
      "client",
      `remote ${endpoint.slice(0, colon)} ${endpoint.slice(colon + 1)}`,
      "nobind",
      `peer-fingerprint ${this.credentials(this.topo.hub).fingerprint}`,
      // Every pod behind the hub or another edge; the tunnel subnet comes with the address.
      `route ${networkAndMask("10.244.0.0/16")}`,
    ];
    // The handshake crosses the impaired link: a few round trips, retransmitted under loss.
    const delayMs = level.kind === "delay" ? level.ms : 0;
    await this.start(edge, options, CONNECT_TIMEOUT_MS + 16 * delayMs);
  }

  /**
   * The hub's tun counters. They count the inner packets (the WireGuard tunnels count sealed
   * ones), and every pod packet to or through the hub enters that tun once.
   */
  hubTransfer(): { rxBytes: number; txBytes: number } | null {
    const hub = this.topo.hub;
    try {
      const [link] = JSON.parse(
        runSync("ip", ["-n", hub.ns, "-j", "-s", "link", "show", "dev", this.ifname(hub)]),
      ) as Array<{ stats64?: { rx: { bytes: number }; tx: { bytes: number } } }>;
      if (!link?.stats64) return null;
      return { rxBytes: link.stats64.rx.bytes, txBytes: link.stats64.tx.bytes };
    } catch {
      return null;
    }
  }

  /** The last lines of the edge's log and of what the hub logged about that edge. */
  diagnose(edge: Node): string {
    const hub = this.topo.hub;
    const parts: string[] = [];
    const edgeProc = this.procs.get(edge);
    parts.push(`${edge.label}: ${edgeProc ? this.lastWords(edgeProc) : "not started"}`);
    const hubProc = this.procs.get(hub);
    if (hubProc) {
      // The hub names a client "e1/address:port" once it knows its certificate.
      const about = new RegExp(`\\b${edge.label}/|CN=${edge.label}\\b|\\[${edge.label}\\]`);
      const lines = logLines(hubProc).filter((line) => about.test(line));
      parts.push(
        `hub about ${edge.label}: ${lines.slice(-LOG_LINES).join(" / ") || "nothing (no handshake reached it)"}`,
      );
    }
    const dead = this.deadDaemon();
    return parts.join(" | ") + (dead ? ` | ${dead}` : "");
  }

  /** OpenVPN writes its errors into its log, on stdout. */
  protected override lastWords(proc: Proc): string {
    const stderr = proc.stderr.toString();
    return [...logLines(proc).slice(-LOG_LINES), ...(stderr ? [stderr] : [])].join(" / ");
  }
}

function logLines(proc: Proc): string[] {
  return proc.stdout
    .toString()
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}
