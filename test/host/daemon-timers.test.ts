// The daemon has no ticker: it sleeps until the core's next timer is due (timers.ts,
// `nextDueMs` / `onEarlierDue`). Here the real `edgetun up` in a namespace, its only peer a UDP
// socket that never answers: the handshake retransmissions must still come, each no sooner
// than Rekey-Timeout (5 s) after the one before, which only a daemon that wakes for its timers
// can send.
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
  tunUnavailableReason() ?? (existsSync(cli) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`daemon timer test skipped: ${skipReason}`);

// Prints "ready", then "<message type> <ms>" per datagram, stamped on arrival.
const LISTENER = `
const socket = require("node:dgram").createSocket("udp4");
socket.on("message", (m) => process.stdout.write(m[0] + " " + performance.now().toFixed(1) + "\\n"));
socket.bind(Number(process.argv[1]), "127.0.0.1", () => process.stdout.write("ready\\n"));
`;

describe.skipIf(skipReason !== null)("a daemon that sleeps between timers", () => {
  const bed = new Testbed();
  const dir = mkdtempSync(join(tmpdir(), "edgetun-timers-"));
  afterAll(() => {
    bed.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it("still retransmits its handshake initiation every Rekey-Timeout to a silent peer", async () => {
    const ns = bed.namespace("timers");
    const port = 40_000 + (randomBytes(2).readUInt16BE() % 20_000);
    const listener = bed.spawn(ns, process.execPath, ["-e", LISTENER, `${port}`]);
    let output = "";
    listener.stdout!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    await waitFor("the UDP listener", () => output.includes("ready"));
    const file = join(dir, "t0.conf");
    writeFileSync(
      file,
      [
        "[Interface]",
        `PrivateKey = ${generatePrivateKey()}`,
        "Address = 10.213.0.1/24",
        "",
        "[Peer]",
        `PublicKey = ${publicKeyOf(generatePrivateKey())}`,
        "AllowedIPs = 10.213.0.2/32",
        `Endpoint = 127.0.0.1:${port}`,
        // Turning the keepalive on sends one at once, which needs a handshake first.
        "PersistentKeepalive = 25",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
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
    let daemonOutput = "";
    daemon.stderr!.setEncoding("utf8").on("data", (chunk: string) => (daemonOutput += chunk));
    const initiations = () =>
      output
        .split("\n")
        .filter((line) => line.startsWith("1 "))
        .map((line) => Number(line.split(" ")[1]));
    await waitFor(
      `three handshake initiations (daemon said: ${daemonOutput})`,
      () => initiations().length >= 3,
      30_000,
    );
    const [, second, third] = initiations() as [number, number, number];
    // Rekey-Timeout plus up to 333 ms of jitter after the retransmission before, never sooner
    // (a few ms for the stamps). The first is left out: its timer was armed when the peer was
    // added, before the interface set-up that delays its sending.
    expect(third - second).toBeGreaterThanOrEqual(REKEY_TIMEOUT_MS - 20);
  }, 45_000);
});
