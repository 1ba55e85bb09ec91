// The daemon has no ticker: it sleeps until the core's next timer is due (timers.ts,
// `nextDueMs` / `onEarlierDue`). Here the real `edgetun up` in a namespace, its peers UDP
// sockets that never answer: the handshake retransmissions must still come, each no sooner
// than Rekey-Timeout (5 s) after the one before, which only a daemon that wakes for its timers
// can send. Three daemons, one per way a peer arrives: in the file at start-up (added through
// the reconfiguration queue before the timers run), by `wg set` on the control socket, and by a
// reload (SIGHUP) of an edited file. The last two start with no peer, so nothing is due and
// they sleep with no wake planned: only the wheel telling them of the new peer's timer
// (`onEarlierDue`) can wake them for its retransmissions.
import { spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { REKEY_TIMEOUT_MS } from "../../src/core/messages.js";
import { Testbed, tunUnavailableReason, waitFor } from "../support/netns.js";

const cli = join(new URL("../..", import.meta.url).pathname, "dist/src/cli/main.js");
const skipReason =
  tunUnavailableReason(["wg"]) ?? (existsSync(cli) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`daemon timer test skipped: ${skipReason}`);

// One UDP socket per port given; prints "ready", then "<port> <message type> <ms>" per
// datagram, stamped on arrival.
const LISTENER = `
const ports = process.argv.slice(1).map(Number);
let bound = 0;
for (const port of ports) {
  const socket = require("node:dgram").createSocket("udp4");
  socket.on("message", (m) =>
    process.stdout.write(port + " " + m[0] + " " + performance.now().toFixed(1) + "\\n"),
  );
  socket.bind(port, "127.0.0.1", () => ++bound === ports.length && process.stdout.write("ready\\n"));
}
`;

const interfaceSection = (address: string) => [
  "[Interface]",
  `PrivateKey = ${generatePrivateKey()}`,
  `Address = ${address}/24`,
  "",
];

const peerSection = (port: number, address: string) => [
  "[Peer]",
  `PublicKey = ${publicKeyOf(generatePrivateKey())}`,
  `AllowedIPs = ${address}/32`,
  `Endpoint = 127.0.0.1:${port}`,
  // Turning the keepalive on sends one at once, which needs a handshake first.
  "PersistentKeepalive = 25",
  "",
];

describe.skipIf(skipReason !== null)("a daemon that sleeps between timers", () => {
  const bed = new Testbed();
  const dir = mkdtempSync(join(tmpdir(), "edgetun-timers-"));
  afterAll(() => {
    bed.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("retransmits every Rekey-Timeout to silent peers added at start-up, by wg set and by a reload", async () => {
    const ns = bed.namespace("timers");
    const base = 40_000 + (randomBytes(2).readUInt16BE() % 20_000);
    const [atStart, bySet, byReload] = [base, base + 1, base + 2];
    const listener = bed.spawn(ns, process.execPath, [
      "-e",
      LISTENER,
      `${atStart}`,
      `${bySet}`,
      `${byReload}`,
    ]);
    let output = "";
    listener.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    await waitFor("the UDP listener", () => output.includes("ready"));
    const initiations = (port: number) =>
      output
        .split("\n")
        .filter((line) => line.startsWith(`${port} 1 `))
        .map((line) => Number(line.split(" ")[2]));

    let daemonOutput = "";
    const startDaemon = (label: string, lines: string[]) => {
      const file = join(dir, `${label}.conf`);
      writeFileSync(file, lines.join("\n"), { mode: 0o600 });
      const name = `tm${randomBytes(4).toString("hex")}`;
      const daemon = bed.spawn(ns, process.execPath, [
        cli,
        "up",
        file,
        "--interface",
        name,
        "--metrics-listen",
        "off",
        "--log-level",
        "warn",
      ]);
      daemon.stderr!.setEncoding("utf8").on("data", (chunk: string) => (daemonOutput += chunk));
      return { file, name, daemon };
    };
    const wg = (...args: string[]) =>
      spawnSync("ip", ["netns", "exec", ns, "wg", ...args], { encoding: "utf8" });
    const whenUp = (name: string) =>
      waitFor(`interface ${name}`, () => wg("show", name).status === 0, 30_000).catch(
        (error: Error) => {
          throw new Error(`${error.message}; daemons said: ${daemonOutput}`);
        },
      );

    startDaemon("start", [
      ...interfaceSection("10.213.0.1"),
      ...peerSection(atStart, "10.213.0.2"),
    ]);
    const set = startDaemon("set", interfaceSection("10.213.1.1"));
    const reload = startDaemon("reload", interfaceSection("10.213.2.1"));
    await Promise.all([whenUp(set.name), whenUp(reload.name)]);

    const setResult = wg(
      "set",
      set.name,
      "peer",
      publicKeyOf(generatePrivateKey()),
      "allowed-ips",
      "10.213.1.2/32",
      "endpoint",
      `127.0.0.1:${bySet}`,
      "persistent-keepalive",
      "25",
    );
    expect(setResult.status, setResult.stderr).toBe(0);
    writeFileSync(
      reload.file,
      [...interfaceSection("10.213.2.1"), ...peerSection(byReload, "10.213.2.2")].join("\n"),
      { mode: 0o600 },
    );
    (reload.daemon as ChildProcess).kill("SIGHUP");

    const enough = () => [atStart, bySet, byReload].every((port) => initiations(port).length >= 3);
    await waitFor("three initiations to each peer", enough, 40_000).catch((error: Error) => {
      throw new Error(`${error.message}; received:\n${output}daemon said: ${daemonOutput}`);
    });
    for (const port of [atStart, bySet, byReload]) {
      const [first, second, third] = initiations(port) as [number, number, number];
      // Rekey-Timeout plus up to 333 ms of jitter after the one before, never sooner (a few ms
      // for the stamps), and not much later either. At start-up the first initiation waits for
      // the rest of the interface set-up, after its retransmission timer was armed.
      const gaps = port === atStart ? [third - second] : [second - first, third - second];
      for (const gap of gaps) {
        expect(gap).toBeGreaterThanOrEqual(REKEY_TIMEOUT_MS - 20);
        expect(gap).toBeLessThan(REKEY_TIMEOUT_MS + 333 + 1_000);
      }
    }
  }, 75_000);
});
