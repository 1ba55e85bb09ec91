// `edgetun demo`: the see-it-work command. Two network namespaces joined by a veth pair play a
// hub and an edge; an edgetun daemon runs in each, the edge pings the hub through the tunnel,
// moves some megabytes over TCP, and both interfaces are shown. Everything it makes (namespaces,
// daemons, helper processes, control sockets, temp files) is removed at the end, on failure
// and on Ctrl-C. No traffic leaves the two namespaces.
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { EdgetunError } from "../core/errors.js";
import { generatePrivateKey, publicKeyOf } from "../core/keys.js";
import { EXIT_CANNOT_RUN, EXIT_FAILED, EXIT_OK } from "./exit-status.js";
import { nativeLoadError } from "../host/native/index.js";
import { NetworkLab, namespaceExists } from "../host/toolkit/netns.js";
import { findCommand, sleep, type Proc } from "../host/toolkit/process.js";
import { DEFAULT_SOCKET_DIRECTORY, formatState, readInterfaceState } from "./show.js";

export interface DemoOptions {
  /** How much to send through the tunnel, in MB (2^20 bytes). Default 100. */
  megabytes?: number;
  /** Where the narration goes. Default process.stdout. */
  out?: NodeJS.WritableStream;
  /** Leave namespaces, daemons and files for inspection; default false. Ctrl-C still cleans. */
  keep?: boolean;
}

const PID_DIRECTORY = "/run/edgetun";
const NAMESPACE_PREFIX = "edgetun-demo-";
const HUB_UNDERLAY = "10.213.0.1";
const EDGE_UNDERLAY = "10.213.0.2";
const HUB_TUNNEL = "10.214.0.1";
const EDGE_TUNNEL = "10.214.0.2";
const LISTEN_PORT = 51820;
const TRANSFER_PORT = 5201;
const ECHO_PORT = 7007;
const PINGS = 3;
const MAX_MEGABYTES = 10_000;

/** The whole demo's budget; the transfer gets more on top for more than 100 MB. */
const OVERALL_MS = 60_000;
const STEPS = 8;

/** A failure the user should read: printed without a stack. */
class DemoFailure extends EdgetunError {
  constructor(
    message: string,
    readonly exitCode = EXIT_FAILED,
  ) {
    super(exitCode === EXIT_CANNOT_RUN ? "ERR_DEMO_CANNOT_RUN" : "ERR_DEMO_FAILED", message);
  }
}

/** dist/src/cli/main.js: beside this file once compiled, or in dist/ when run from src/ (tests). */
function locateCli(): string | null {
  const candidates = ["./main.js", "../../dist/src/cli/main.js"].map((relative) =>
    fileURLToPath(new URL(relative, import.meta.url)),
  );
  return candidates.find((path) => existsSync(path)) ?? null;
}

function isCharacterDevice(path: string): boolean {
  try {
    return statSync(path).isCharacterDevice();
  } catch {
    return false;
  }
}

function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

function formatMegabytes(megabytes: number): string {
  return Number.isInteger(megabytes) ? String(megabytes) : megabytes.toFixed(2);
}

// ---------------------------------------------------------------------------------------
// Small Node programs run inside the namespaces when ping or iperf3 is not installed. They
// are passed with `node -e`, so the demo needs no file beyond this one. Arguments follow.

/** UDP echo server: <host> <port>; prints "ready". */
const UDP_ECHO_SERVER = `
const dgram = require("node:dgram");
const [host, port] = process.argv.slice(1);
const socket = dgram.createSocket("udp4");
socket.on("message", (message, from) => socket.send(message, from.port, from.address));
socket.bind(Number(port), host, () => process.stdout.write("ready\\n"));
`;

/** UDP echo client: <host> <port> <count>; one ping-style line per reply or loss. */
const UDP_ECHO_CLIENT = `
const dgram = require("node:dgram");
const [host, port, count] = process.argv.slice(1);
const socket = dgram.createSocket("udp4");
let pending = null;
function send(seq) {
  if (seq > Number(count)) return socket.close();
  const timer = setTimeout(() => {
    process.stdout.write("no reply from " + host + ": seq=" + seq + "\\n");
    pending = null;
    send(seq + 1);
  }, 6000);
  pending = { seq, timer, start: process.hrtime.bigint() };
  socket.send(Buffer.from("edgetun demo ping " + seq), Number(port), host);
}
socket.on("message", (message) => {
  if (!pending || message.toString() !== "edgetun demo ping " + pending.seq) return;
  clearTimeout(pending.timer);
  const ms = Number(process.hrtime.bigint() - pending.start) / 1e6;
  const { seq } = pending;
  pending = null;
  process.stdout.write(
    message.length + " bytes from " + host + ": udp_seq=" + seq + " time=" + ms.toFixed(2) + " ms\\n",
  );
  setTimeout(() => send(seq + 1), 200);
});
send(1);
`;

/** TCP receiver: <host> <port>; prints "ready", then {"bytes","seconds"} for one connection. */
const TCP_RECEIVER = `
const net = require("node:net");
const [host, port] = process.argv.slice(1);
const server = net.createServer((socket) => {
  const start = process.hrtime.bigint();
  let bytes = 0;
  socket.on("data", (data) => { bytes += data.length; });
  socket.on("end", () => {
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    process.stdout.write(JSON.stringify({ bytes, seconds }) + "\\n");
    socket.end();
    server.close();
  });
});
server.listen(Number(port), host, () => process.stdout.write("ready\\n"));
`;

/** TCP sender: <host> <port> <bytes>; exits 0 once everything is sent and the peer closed. */
const TCP_SENDER = `
const net = require("node:net");
const [host, port, total] = process.argv.slice(1);
const chunk = require("node:crypto").randomBytes(64 * 1024);
let left = Number(total);
const socket = net.connect(Number(port), host, () => {
  const pump = () => {
    while (left > 0) {
      const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
      left -= piece.length;
      if (!socket.write(piece)) return void socket.once("drain", pump);
    }
    socket.end();
  };
  pump();
});
socket.resume();
socket.on("error", (error) => { process.stderr.write(error.message + "\\n"); process.exit(1); });
socket.on("close", (hadError) => process.exit(hadError || left > 0 ? 1 : 0));
`;

// ---------------------------------------------------------------------------------------

interface DaemonProcess {
  role: "hub" | "edge";
  name: string;
  namespace: string;
  config: string;
  log: string;
  process: Proc;
}

/** Output kept of a helper (iperf3's JSON report of a long transfer included). */
const OUTPUT_LIMIT = 16 << 20;

class Demo {
  private readonly out: NodeJS.WritableStream;
  private readonly megabytes: number;
  private readonly keep: boolean;
  private readonly started = Date.now();
  private readonly deadline: number;
  /** The namespaces and what runs in them; made once the names are chosen. */
  private lab: NetworkLab | null = null;
  private readonly daemons: DaemonProcess[] = [];
  private tempDir: string | null = null;
  private cli = "";
  private stepNumber = 0;
  private stepName = "";
  private stopping = false;
  private cleaning: Promise<string[]> | null = null;
  private interrupted: NodeJS.Signals | null = null;
  /** Rejects when a daemon exits while the demo still needs it, or on SIGINT/SIGTERM. */
  private readonly aborted: Promise<never>;
  private abort: (error: Error) => void = () => {};

  constructor(options: DemoOptions) {
    this.out = options.out ?? process.stdout;
    this.megabytes = options.megabytes ?? 100;
    this.keep = options.keep ?? false;
    // A slow machine still gets at least ~32 Mbit/s worth of time for a bigger transfer.
    const extra = Math.max(0, this.megabytes - 100) * 250;
    this.deadline = this.started + OVERALL_MS + (Number.isFinite(extra) ? extra : 0);
    this.aborted = new Promise<never>((_, reject) => {
      this.abort = reject;
    });
    this.aborted.catch(() => {});
  }

  /** Narration; silent once a signal has taken over (steps still unwinding say nothing). */
  private say(text = "", always = false): void {
    if (this.interrupted && !always) return;
    this.out.write(`${text}\n`);
  }

  private detail(text: string, always = false): void {
    for (const line of text.replace(/\n+$/, "").split("\n")) {
      this.say(`      ${line}`.trimEnd(), always);
    }
  }

  // -------------------------------------------------------------------------------------
  // Processes

  /** Starts a process inside a namespace, in its own process group (Ctrl-C reaches only the
   * demo, which stops it). */
  private start(
    namespace: string,
    label: string,
    command: string,
    args: string[],
    output: "pipe" | number = "pipe",
  ): Proc {
    // Once cleaning up has begun, a step still unwinding must not make anything new.
    if (this.stopping || !this.lab) throw new DemoFailure("stopping");
    return this.lab.spawn(namespace, label, command, args, { output, stdoutLimit: OUTPUT_LIMIT });
  }

  /** Runs a command inside a namespace to the end; its output and how it ended. */
  private async run(
    namespace: string,
    command: string,
    args: string[],
  ): Promise<{ ok: boolean; stdout: string; stderr: string; how: string }> {
    const proc = this.start(namespace, `${command} ${args.join(" ")}`, command, args);
    const { code } = await proc.exited;
    return {
      ok: code === 0,
      stdout: proc.stdout.raw,
      stderr: proc.stderr.raw,
      how: proc.exitDescription,
    };
  }

  /** Waits until a process prints something matching `pattern`; fails if it exits first. */
  private async waitForOutput(proc: Proc, pattern: RegExp): Promise<void> {
    while (!pattern.test(proc.stdout.raw)) {
      if (!proc.running) {
        const why = proc.stderr.toString() || proc.stdout.toString() || proc.exitDescription;
        throw new DemoFailure(`${proc.label} stopped before it was ready: ${why}`);
      }
      await sleep(25);
    }
  }

  // -------------------------------------------------------------------------------------
  // Steps

  private header(title: string): void {
    this.stepNumber++;
    this.say();
    this.say(`[${this.stepNumber}/${STEPS}] ${title}`);
  }

  /** Runs one step with its own time limit (and never past the demo's overall deadline). */
  private async step<T>(name: string, timeoutMs: number, body: () => Promise<T>): Promise<T> {
    this.stepName = name;
    const remaining = this.deadline - Date.now();
    const limit = Math.max(0, Math.min(timeoutMs, remaining));
    const overall = remaining < timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new DemoFailure(
            overall
              ? `the demo as a whole ran past its ${formatSeconds(this.deadline - this.started)} limit`
              : `this step did not finish within its ${formatSeconds(timeoutMs)} limit`,
          ),
        );
      }, limit);
    });
    try {
      return await Promise.race([body(), timeout, this.aborted]);
    } finally {
      clearTimeout(timer);
    }
  }

  private checkMachine(): void {
    this.header("Checking that this machine can run the demo");
    const missing: string[] = [];
    if (process.getuid?.() !== 0) {
      missing.push("root: network namespaces and TUN devices need it (try: sudo edgetun demo)");
    }
    if (!isCharacterDevice("/dev/net/tun")) {
      missing.push(
        "/dev/net/tun: the kernel's TUN driver (modprobe tun; in a container, pass the device in, " +
          "e.g. docker run --device /dev/net/tun --cap-add NET_ADMIN)",
      );
    }
    if (!findCommand("ip")) missing.push("the `ip` command: install iproute2");
    const cli = locateCli();
    if (!cli) {
      missing.push("the built daemon (dist/src/cli/main.js): run npm run build");
    } else {
      this.cli = cli;
    }
    const addon = nativeLoadError();
    if (addon) missing.push(`the native addon: ${addon.message}`);
    if (missing.length > 0) {
      throw new DemoFailure(
        `This machine cannot run the demo. Missing:\n${missing.map((m) => `  - ${m}`).join("\n")}`,
        EXIT_CANNOT_RUN,
      );
    }
    const optional = ["ping", "iperf3"].filter((tool) => !findCommand(tool));
    this.detail(
      "ok: running as root, /dev/net/tun is there, and so is `ip`" +
        (optional.length
          ? ` (no ${optional.join(" or ")}: small Node programs stand in for ${optional.length > 1 ? "them" : "it"})`
          : ""),
    );
  }

  private async makeNamespaces(id: string): Promise<[string, string]> {
    this.header("Creating two network namespaces: a pretend hub and a pretend edge node");
    const lab = this.lab!;
    for (const [index, role] of (["hub", "edge"] as const).entries()) {
      try {
        lab.add(role);
      } catch (error) {
        const why = error instanceof Error ? error.message : String(error);
        if (/exists/i.test(why)) {
          // someone else's: the lab did not take it, so it is not removed
          throw new DemoFailure(`a namespace named ${lab.name(role)} already exists; run it again`);
        }
        // The first one tells whether this kernel (or container) allows namespaces at all.
        throw new DemoFailure(
          `could not create network namespace ${lab.name(role)} (${why})`,
          index === 0 ? EXIT_CANNOT_RUN : EXIT_FAILED,
        );
      }
    }
    const hub = lab.name("hub");
    const edge = lab.name("edge");
    // Both ends are created directly inside the namespaces: nothing appears on this host.
    const [hubLink, edgeLink] = lab.veth(hub, edge, {
      nameA: `vhub${id}`,
      nameB: `vedge${id}`,
      addressA: `${HUB_UNDERLAY}/24`,
      addressB: `${EDGE_UNDERLAY}/24`,
    });
    this.detail(`hub   namespace ${hub.padEnd(edge.length)}  veth ${hubLink}   ${HUB_UNDERLAY}/24`);
    this.detail(`edge  namespace ${edge}  veth ${edgeLink}  ${EDGE_UNDERLAY}/24`);
    this.detail(
      'A virtual cable (a veth pair) joins them. This is the "underlay": the plain network\n' +
        "the encrypted WireGuard packets will travel over, as the internet would in real life.",
    );
    return [hub, edge];
  }

  private writeConfigs(id: string): { hub: string; edge: string } {
    this.stepName = "writing the configs";
    this.header("Generating keys and writing a config for each side");
    const dir = mkdtempSync(join(tmpdir(), NAMESPACE_PREFIX));
    this.tempDir = dir;
    const hubKey = generatePrivateKey();
    const edgeKey = generatePrivateKey();
    const hubConfig = [
      "[Interface]",
      `PrivateKey = ${hubKey}`,
      `ListenPort = ${LISTEN_PORT}`,
      `Address = ${HUB_TUNNEL}/24`,
      "",
      "[Peer]",
      "# the edge",
      `PublicKey = ${publicKeyOf(edgeKey)}`,
      `AllowedIPs = ${EDGE_TUNNEL}/32`,
      "",
    ].join("\n");
    const edgeConfig = [
      "[Interface]",
      `PrivateKey = ${edgeKey}`,
      `Address = ${EDGE_TUNNEL}/24`,
      "",
      "[Peer]",
      "# the hub",
      `PublicKey = ${publicKeyOf(hubKey)}`,
      `Endpoint = ${HUB_UNDERLAY}:${LISTEN_PORT}`,
      `AllowedIPs = 10.214.0.0/24`,
      "PersistentKeepalive = 25",
      "",
    ].join("\n");
    const hub = join(dir, `demohub${id}.conf`);
    const edge = join(dir, `demoedge${id}.conf`);
    writeFileSync(hub, hubConfig, { mode: 0o600 });
    writeFileSync(edge, edgeConfig, { mode: 0o600 });
    const shown = (text: string) =>
      text.replace(/^PrivateKey = .*$/m, "PrivateKey = (hidden; a fresh key made for this demo)");
    this.detail(`${hub}:`);
    this.detail(shown(hubConfig).trimEnd().replace(/^/gm, "  "));
    this.detail("");
    this.detail(`${edge}:`);
    this.detail(shown(edgeConfig).trimEnd().replace(/^/gm, "  "));
    this.detail("");
    this.detail(
      "Each side knows only its own private key and the other's public key. The edge knows\n" +
        "where the hub is (Endpoint); the hub learns where the edge is from its first packet.",
    );
    return { hub, edge };
  }

  private async startDaemons(
    id: string,
    namespaces: [string, string],
    configs: { hub: string; edge: string },
  ): Promise<[DaemonProcess, DaemonProcess]> {
    this.header("Starting an edgetun daemon in each namespace, the hub first");
    const wanted: Array<[DaemonProcess["role"], string, string, string]> = [
      ["hub", `demohub${id}`, namespaces[0], configs.hub],
      ["edge", `demoedge${id}`, namespaces[1], configs.edge],
    ];
    // One after the other: the edge greets the hub at once (it has a keepalive set), so the
    // hub should already be listening, or that first handshake waits 5 s for its retry.
    for (const [role, name, namespace, config] of wanted) {
      const log = join(this.tempDir!, `${name}.log`);
      const fd = openSync(log, "a", 0o600);
      const args = [this.cli, "up", config, "--interface", name];
      this.detail(`ip netns exec ${namespace} node ${args.join(" ")}`);
      let tracked: Proc;
      try {
        tracked = this.start(namespace, `the ${role} daemon`, process.execPath, args, fd);
      } finally {
        closeSync(fd);
      }
      const daemon: DaemonProcess = { role, name, namespace, config, log, process: tracked };
      this.daemons.push(daemon);
      tracked.child.once("exit", () => {
        if (this.stopping) return;
        this.abort(
          new DemoFailure(
            `the ${role} daemon (${name}) stopped unexpectedly (${tracked.exitDescription}).` +
              ` Its log:\n${this.logTail(daemon)}`,
          ),
        );
      });
      const socket = join(DEFAULT_SOCKET_DIRECTORY, `${name}.sock`);
      for (;;) {
        if (existsSync(socket)) {
          try {
            await readInterfaceState(name);
            break;
          } catch {
            // the socket is there but not answering yet
          }
        }
        await sleep(50);
      }
      this.detail(
        `  ${role}: interface ${name} is up (pid ${tracked.child.pid}), control socket ${socket}`,
      );
    }
    return [this.daemons[0]!, this.daemons[1]!];
  }

  /** The last lines of a daemon's log (those matching `only`, if given), indented. */
  private logTail(daemon: DaemonProcess, lines = 15, only?: RegExp): string {
    let text: string;
    try {
      text = readFileSync(daemon.log, "utf8");
    } catch {
      return only ? "" : "  (no log)";
    }
    const kept = text.split("\n").filter((line) => line.trim() && (!only || only.test(line)));
    if (kept.length === 0) return only ? "" : "  (empty)";
    return kept
      .slice(-lines)
      .map((line) => `  ${line}`)
      .join("\n");
  }

  private async ping(hub: string, edge: string): Promise<void> {
    const ping = findCommand("ping");
    this.header(
      `Pinging the hub's tunnel address ${HUB_TUNNEL} from the edge (${ping ? "ping" : "UDP echo in Node, as ping is not installed"})`,
    );
    this.detail(
      "The first packet finds no session yet, so the edge's daemon does the WireGuard\n" +
        "handshake with the hub first; the packet waits for it and then goes through encrypted.",
    );
    let output: string;
    if (ping) {
      const result = await this.run(edge, ping, [
        "-n",
        "-c",
        String(PINGS),
        "-i",
        "0.5",
        "-W",
        "3",
        HUB_TUNNEL,
      ]);
      output = result.stdout + result.stderr;
    } else {
      const server = this.start(hub, "the UDP echo server", process.execPath, [
        "-e",
        UDP_ECHO_SERVER,
        HUB_TUNNEL,
        String(ECHO_PORT),
      ]);
      await this.waitForOutput(server, /ready/);
      const result = await this.run(edge, process.execPath, [
        "-e",
        UDP_ECHO_CLIENT,
        HUB_TUNNEL,
        String(ECHO_PORT),
        String(PINGS),
      ]);
      output = result.stdout + result.stderr;
      await server.end(2000);
    }
    const lines = output
      .split("\n")
      .filter((line) => /^\d+ bytes from|no reply|[Uu]nreachable/.test(line));
    if (lines.length) this.detail(lines.join("\n"));
    const replies = lines.filter((line) => /^\d+ bytes from/.test(line)).length;
    if (replies === 0) {
      throw new DemoFailure(
        `no ping replies from ${HUB_TUNNEL} through the tunnel:\n${output.trim() || "(no output)"}`,
      );
    }
    this.detail(
      `${replies} of ${PINGS} pings answered through the tunnel` +
        (replies < PINGS ? " (some were lost; the rest got through)" : "."),
    );
  }

  private async transfer(hub: string, edge: string): Promise<void> {
    const iperf = findCommand("iperf3");
    const bytes = Math.round(this.megabytes * 1024 * 1024);
    const size = `${formatMegabytes(this.megabytes)} MB`;
    this.header(
      `Sending ${size} over TCP from the edge to the hub through the tunnel (${iperf ? "iperf3" : "Node, as iperf3 is not installed"})`,
    );
    let received: number;
    let seconds: number;
    let mbits: number;
    if (iperf) {
      const server = this.start(hub, "the iperf3 server", iperf, [
        "-s",
        "-1",
        "-B",
        HUB_TUNNEL,
        "-p",
        String(TRANSFER_PORT),
        "--forceflush",
      ]);
      await this.waitForOutput(server, /Server listening/);
      const result = await this.run(edge, iperf, [
        "-c",
        HUB_TUNNEL,
        "-p",
        String(TRANSFER_PORT),
        "-n",
        String(bytes),
        "-J",
      ]);
      interface Sum {
        bytes?: number;
        seconds?: number;
        bits_per_second?: number;
      }
      let report: { error?: string; end?: { sum_sent?: Sum; sum_received?: Sum } } = {};
      try {
        report = JSON.parse(result.stdout) as typeof report;
      } catch {
        // reported below
      }
      const sent = report.end?.sum_sent;
      const got = report.end?.sum_received;
      if (!result.ok || !sent?.bytes || !got?.seconds || !got.bits_per_second) {
        throw new DemoFailure(
          `iperf3 failed: ${report.error ?? (result.stderr.trim() || result.how)}`,
        );
      }
      // The client ends only once TCP has delivered all it sent; the receiver's own count
      // can stop a little short when it closes its last interval, so its rate is the figure.
      received = sent.bytes;
      seconds = got.seconds;
      mbits = got.bits_per_second / 1e6;
      await server.end(2000);
    } else {
      const receiver = this.start(hub, "the TCP receiver", process.execPath, [
        "-e",
        TCP_RECEIVER,
        HUB_TUNNEL,
        String(TRANSFER_PORT),
      ]);
      await this.waitForOutput(receiver, /ready/);
      const sender = await this.run(edge, process.execPath, [
        "-e",
        TCP_SENDER,
        HUB_TUNNEL,
        String(TRANSFER_PORT),
        String(bytes),
      ]);
      if (!sender.ok) {
        throw new DemoFailure(`the TCP sender failed: ${sender.stderr.trim() || sender.how}`);
      }
      await this.waitForOutput(receiver, /"seconds"/);
      const report = JSON.parse(
        receiver.stdout.raw.split("\n").find((l) => l.startsWith("{"))!,
      ) as {
        bytes: number;
        seconds: number;
      };
      received = report.bytes;
      seconds = report.seconds;
      mbits = (received * 8) / seconds / 1e6;
      await receiver.end(2000);
    }
    if (received < bytes) {
      throw new DemoFailure(`only ${received} of ${bytes} bytes arrived at the hub`);
    }
    this.detail(
      `${size} arrived at the hub in ${seconds.toFixed(2)} s: ${mbits.toFixed(1)} Mbit/s through the tunnel.`,
    );
    this.detail(
      "(Both daemons share this machine's CPUs with the sender and receiver, and every\n" +
        "packet is encrypted and decrypted in userspace.)",
    );
  }

  private async show(hub: DaemonProcess, edge: DaemonProcess): Promise<void> {
    this.header("What `edgetun show` says about each side");
    for (const daemon of [hub, edge]) {
      const state = await readInterfaceState(daemon.name);
      this.detail(`(in ${daemon.namespace})`);
      this.detail(formatState(state));
      this.detail("");
    }
    this.detail(
      '"latest handshake" is when the two last agreed on fresh session keys; "transfer"\n' +
        "counts the encrypted bytes each side received from and sent to its peer.",
    );
  }

  // -------------------------------------------------------------------------------------
  // Cleaning up

  /** Removes everything the demo made. Safe to call more than once; returns what is left. */
  cleanup(): Promise<string[]> {
    this.cleaning ??= this.removeAll();
    return this.cleaning;
  }

  private async removeAll(): Promise<string[]> {
    this.stopping = true;
    const problems: string[] = [];
    for (const daemon of this.daemons) {
      if (!daemon.process.running) continue;
      this.detail(
        `stopping the ${daemon.role} daemon (pid ${daemon.process.pid}) with SIGTERM`,
        true,
      );
    }
    const stopped = await Promise.all(this.daemons.map((daemon) => daemon.process.end(10_000)));
    stopped.forEach((clean, index) => {
      if (!clean) {
        const daemon = this.daemons[index]!;
        problems.push(`the ${daemon.role} daemon did not stop in 10 s and was killed`);
      }
    });
    // The helpers, anything else still inside the namespaces (ours, so ended by PID), then
    // the namespaces themselves.
    const removal = this.lab?.destroy(2000) ?? { deleted: [], problems: [] };
    problems.push(...removal.problems);
    if (removal.deleted.length) {
      this.detail(
        `deleted ${[...removal.deleted].reverse().join(" and ")}\n(and with them the veth pair and the tunnel interfaces)`,
        true,
      );
    }
    // A daemon that had to be killed leaves its socket and pid file: they are ours by name.
    for (const daemon of this.daemons) {
      for (const path of [
        join(DEFAULT_SOCKET_DIRECTORY, `${daemon.name}.sock`),
        join(PID_DIRECTORY, `${daemon.name}.pid`),
      ]) {
        if (existsSync(path)) {
          rmSync(path, { force: true });
          problems.push(`removed ${path}, which its daemon left behind`);
        }
      }
    }
    if (this.tempDir) {
      rmSync(this.tempDir, { recursive: true, force: true });
      this.detail(`removed ${this.tempDir}`, true);
      this.tempDir = null;
    }
    return problems;
  }

  // -------------------------------------------------------------------------------------

  async perform(): Promise<number> {
    this.say(
      "edgetun demo: two network namespaces, one WireGuard tunnel between them, real traffic.",
    );
    this.say("Nothing here touches this machine's own network; everything is removed at the end.");
    try {
      if (
        !Number.isFinite(this.megabytes) ||
        this.megabytes <= 0 ||
        this.megabytes > MAX_MEGABYTES
      ) {
        throw new DemoFailure(`--megabytes must be a number above 0 and at most ${MAX_MEGABYTES}`);
      }
      this.checkMachine();
    } catch (error) {
      return this.fail(error);
    }
    const onSignal = (signal: NodeJS.Signals): void => {
      if (this.interrupted) {
        this.say("(still cleaning up; one moment)", true);
        return;
      }
      this.interrupted = signal;
      const why = signal === "SIGINT" ? "Interrupted (Ctrl-C)" : `Got ${signal}`;
      this.say(`\n${why}: cleaning up before exiting.`, true);
      this.abort(new DemoFailure(why));
      void this.cleanup().then((problems) => {
        for (const problem of problems) this.detail(`warning: ${problem}`, true);
        process.exit(signal === "SIGINT" ? 130 : 143);
      });
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    let code = EXIT_OK;
    try {
      let id = randomBytes(2).toString("hex");
      for (let tries = 0; tries < 20; tries++) {
        const taken =
          namespaceExists(`${NAMESPACE_PREFIX}${id}-hub`) ||
          namespaceExists(`${NAMESPACE_PREFIX}${id}-edge`) ||
          existsSync(join(DEFAULT_SOCKET_DIRECTORY, `demohub${id}.sock`)) ||
          existsSync(join(DEFAULT_SOCKET_DIRECTORY, `demoedge${id}.sock`));
        if (!taken) break;
        id = randomBytes(2).toString("hex");
      }
      this.lab = new NetworkLab({ prefix: NAMESPACE_PREFIX, id });
      const namespaces = await this.step("creating the namespaces", 10_000, () =>
        this.makeNamespaces(id),
      );
      const configs = this.writeConfigs(id);
      const [hub, edge] = await this.step("starting the daemons", 15_000, () =>
        this.startDaemons(id, namespaces, configs),
      );
      await this.step("pinging the hub", 25_000, () => this.ping(namespaces[0], namespaces[1]));
      // At least ~32 Mbit/s, or 20 s, whichever is longer.
      const transferMs = Math.max(20_000, this.megabytes * 250);
      await this.step(`sending ${formatMegabytes(this.megabytes)} MB`, transferMs, () =>
        this.transfer(namespaces[0], namespaces[1]),
      );
      await this.step("reading the interfaces' state", 10_000, () => this.show(hub, edge));
    } catch (error) {
      if (this.interrupted) return this.waitForSignalExit();
      code = this.fail(error);
    }
    if (this.interrupted) return this.waitForSignalExit();
    try {
      this.stepNumber = STEPS - 1;
      if (this.keep) {
        this.header("Leaving everything in place for you to look at (keep)");
        this.describeLeftovers();
      } else {
        this.header("Cleaning up");
        const problems = await this.cleanup();
        for (const problem of problems) this.detail(`warning: ${problem}`);
        if (this.interrupted) return this.waitForSignalExit();
        if (problems.some((problem) => problem.endsWith("is still there"))) code = EXIT_FAILED;
        this.detail(problems.length ? "done." : "done: nothing is left behind.");
      }
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    this.say();
    const took = formatSeconds(Date.now() - this.started);
    if (code === EXIT_OK) {
      this.say(`The tunnel works. Finished in ${took}.`);
      this.say(
        "To build your own: write configs like the two above, then `edgetun up FILE` on each\n" +
          "machine, and `edgetun show` (or `wg show`) to watch it.",
      );
    } else {
      this.say(`The demo failed (after ${took}); see the message above.`);
    }
    return code;
  }

  /** A signal handler is cleaning up and will exit the process; report its code meanwhile. */
  private async waitForSignalExit(): Promise<number> {
    await this.cleanup();
    return this.interrupted === "SIGINT" ? 130 : 143;
  }

  private describeLeftovers(): void {
    for (const daemon of this.daemons) {
      daemon.process.child.unref();
      this.detail(
        `${daemon.role}: namespace ${daemon.namespace}, interface ${daemon.name}, daemon pid ${daemon.process.child.pid}, log ${daemon.log}`,
      );
    }
    this.detail("Look around, for example:");
    for (const daemon of this.daemons) {
      this.detail(`  ip netns exec ${daemon.namespace} ip address show ${daemon.name}`);
    }
    for (const daemon of this.daemons) {
      this.detail(`  node ${this.cli || "dist/src/cli/main.js"} show ${daemon.name}`);
    }
    this.detail("Then remove it all with:");
    const pids = this.daemons.map((daemon) => daemon.process.child.pid).join(" ");
    if (pids) this.detail(`  kill ${pids}`);
    for (const namespace of this.lab?.created ?? []) this.detail(`  ip netns delete ${namespace}`);
    if (this.tempDir) this.detail(`  rm -r ${this.tempDir}`);
  }

  private fail(error: unknown): number {
    const failure =
      error instanceof DemoFailure
        ? error
        : new DemoFailure(error instanceof Error ? error.message : String(error));
    this.say();
    if (failure.exitCode === EXIT_CANNOT_RUN) {
      this.say(failure.message);
    } else {
      const where = this.stepName ? ` at step ${this.stepNumber} (${this.stepName})` : "";
      this.say(`Failed${where}: ${failure.message}`);
      // Warnings and errors a daemon logged may say why; its routine lines would not.
      for (const daemon of this.daemons) {
        if (failure.message.includes(daemon.name)) continue;
        const problems = this.logTail(daemon, 8, /"level":"(warn|error)"|\b(WARN|ERROR)\b/);
        if (problems) this.say(`The ${daemon.role} daemon (${daemon.name}) logged:\n${problems}`);
      }
    }
    return failure.exitCode;
  }
}

/**
 * Runs the demo, narrating on `out`. Returns the exit code: 0 when the tunnel worked, 1 on a
 * failure (explained on `out`), 2 when this machine cannot run it (not root, no /dev/net/tun,
 * no `ip`, nothing built). On SIGINT/SIGTERM it cleans up and exits the process (130/143).
 */
export async function runDemo(options: DemoOptions = {}): Promise<number> {
  return new Demo(options).perform();
}
