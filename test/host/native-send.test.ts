// The native send direction (the default; native/dataplane.c reads the TUN device, seals and
// sends) under `edgetun up` against Debian's wireguard-go, each in a network
// namespace of this test's, joined by a veth pair: pings and TCP transfers both ways, with
// either side initiating, and `wg show` transfer counters on both sides agreeing byte for
// byte. The daemon's "interface down" line says how many packets the thread sealed, so the
// test knows they really took it; wireguard-go's receive counters agreeing with edgetun's send
// counters say none was refused (a reused counter would be dropped as a replay there).
//
// Underlay 10.225.0.0/24 (edgetun .1, wireguard-go .2); tunnel 10.226.0.0/24 (.1, .2).
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import {
  ChildScope,
  EDGETUN_CLI,
  WatchedChild,
  startEdgetunUp,
  writeSecretFile,
} from "../support/children.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";
import {
  TCP_TRANSFER_FIXTURE,
  pingCount,
  tcpTransfer,
  tcpTransferBuilt,
} from "../support/traffic.js";

const skipReason =
  netnsUnavailableReason(["wireguard-go", "wg", "ping"]) ??
  (existsSync(EDGETUN_CLI) && tcpTransferBuilt() ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`native send direction tests skipped: ${skipReason}`);

const ET_UNDERLAY = "10.225.0.1";
const WG_UNDERLAY = "10.225.0.2";
const ET_TUNNEL = "10.226.0.1";
const WG_TUNNEL = "10.226.0.2";
const MB = 1024 * 1024;

/** The daemon's "interface down" counters this test reads. */
interface InterfaceDown {
  nativeSealed: number;
  nativeTunToJs: number;
  nativeSendMessages: number;
  drops: Record<string, number>;
}

describe.skipIf(skipReason !== null)("the native send direction against wireguard-go", () => {
  const bed = new Testbed();
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-send-"));
  const tag = randomBytes(3).toString("hex");
  let etNs = "";
  let wgNs = "";
  let counter = 0;
  const scope = new ChildScope();

  beforeAll(() => {
    etNs = bed.namespace("et");
    wgNs = bed.namespace("wg");
    bed.link(etNs, `${ET_UNDERLAY}/24`, wgNs, `${WG_UNDERLAY}/24`);
  }, 30_000);

  // Whatever a case left running is ended by PID before the next case starts.
  afterEach(async () => scope.stopAll(), 30_000);

  afterAll(() => {
    bed.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }, 30_000);

  const secretFile = (name: string, key: string) => writeSecretFile(tmp, name, key);

  /** edgetun (send direction on) and wireguard-go, each knowing the other's endpoint. */
  async function startPair(): Promise<{
    daemon: WatchedChild;
    name: string;
    wgName: string;
    etPublic: string;
    wgPublic: string;
  }> {
    const n = counter++;
    const name = `s${tag}${n}`;
    const wgName = `g${tag}${n}`;
    const etPort = 44000 + n;
    const wgPort = 45000 + n;
    const etPrivate = generatePrivateKey();
    const wgPrivate = generatePrivateKey();
    const etPublic = publicKeyOf(etPrivate);
    const wgPublic = publicKeyOf(wgPrivate);

    const wg = scope.add(
      new WatchedChild(`wireguard-go ${wgName}`, bed.spawn(wgNs, "wireguard-go", ["-f", wgName])),
    );
    await waitFor("wireguard-go's control socket", () => {
      if (!wg.running) throw new Error(`wireguard-go exited early:\n${wg.output}`);
      return existsSync(`/var/run/wireguard/${wgName}.sock`);
    });
    bed.exec(wgNs, "wg", [
      "set",
      wgName,
      "private-key",
      secretFile(`${wgName}.key`, wgPrivate),
      "listen-port",
      String(wgPort),
      "peer",
      etPublic,
      "allowed-ips",
      `${ET_TUNNEL}/32`,
      "endpoint",
      `${ET_UNDERLAY}:${etPort}`,
    ]);
    bed.exec(wgNs, "ip", ["address", "add", `${WG_TUNNEL}/24`, "dev", wgName]);
    bed.exec(wgNs, "ip", ["link", "set", wgName, "up"]);

    const file = join(tmp, `${name}.conf`);
    writeFileSync(
      file,
      [
        "[Interface]",
        `PrivateKey = ${etPrivate}`,
        `ListenPort = ${etPort}`,
        `Address = ${ET_TUNNEL}/24`,
        "",
        "[Peer]",
        `PublicKey = ${wgPublic}`,
        `AllowedIPs = ${WG_TUNNEL}/32`,
        `Endpoint = ${WG_UNDERLAY}:${wgPort}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const daemon = await startEdgetunUp(bed, scope, etNs, {
      file,
      name,
      env: { EDGETUN_NATIVE_SEND: "1" },
    });
    return { daemon, name, wgName, etPublic, wgPublic };
  }

  const ping = async (ns: string, address: string, count: number) =>
    (await pingCount(ns, address, count, { intervalSeconds: 0.05, waitSeconds: 3 })).received;

  /** Moves `megabytes` over TCP from clientNs to serverNs's `address`; SHA-256 must match. */
  async function transfer(serverNs: string, clientNs: string, address: string, megabytes: number) {
    const route = { serverNs, clientNs, address, port: 46000 + counter++ };
    const { sent, received } = await tcpTransfer(bed, scope, route, megabytes);
    expect(received.bytes).toBe(megabytes * MB);
    expect(received.sha256).toBe(sent.sha256);
  }

  /** `wg show NAME transfer` for its one peer: [received, sent] bytes. */
  function transferShown(ns: string, name: string): [number, number] {
    const fields = bed.exec(ns, "wg", ["show", name, "transfer"]).trim().split("\t");
    return [Number(fields[1]), Number(fields[2])];
  }

  async function stop(daemon: WatchedChild): Promise<InterfaceDown> {
    daemon.signal("SIGTERM");
    expect((await daemon.exited).code).toBe(0);
    return daemon.interfaceDown<InterfaceDown>();
  }

  for (const initiator of ["edgetun", "wireguard-go"] as const) {
    it(`${initiator} initiates: pings and 16 MB over TCP each way, sealed by the thread; wg show agrees on both sides`, async () => {
      const { daemon, name, wgName } = await startPair();
      const [firstNs, firstAddress] =
        initiator === "edgetun" ? [etNs, WG_TUNNEL] : [wgNs, ET_TUNNEL];
      expect(await ping(firstNs, firstAddress, 3)).toBe(3);
      await transfer(wgNs, etNs, WG_TUNNEL, 16);
      await transfer(etNs, wgNs, ET_TUNNEL, 16);
      // Bulk may lose datagrams in a socket buffer, so the byte counts are compared over pings
      // alone: what edgetun sent in that time (sealed by the thread) is what wireguard-go
      // accepted, none refused as a replay, and the other way round.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const [etReceivedBefore, etSentBefore] = transferShown(etNs, name);
      const [wgReceivedBefore, wgSentBefore] = transferShown(wgNs, wgName);
      const answered = [await ping(etNs, WG_TUNNEL, 20), await ping(wgNs, ET_TUNNEL, 20)];
      await new Promise((resolve) => setTimeout(resolve, 500));
      const [etReceived, etSent] = transferShown(etNs, name);
      const [wgReceived, wgSent] = transferShown(wgNs, wgName);
      const down = await stop(daemon);
      expect(answered, daemon.output.slice(-3000)).toEqual([20, 20]);
      expect(etSent - etSentBefore).toBeGreaterThanOrEqual(40 * 128);
      expect(wgReceived - wgReceivedBefore).toBe(etSent - etSentBefore);
      expect(etReceived - etReceivedBefore).toBe(wgSent - wgSentBefore);
      expect(etSent).toBeGreaterThan(16 * MB);
      // 16 MB at most ~1.4 KB per packet: the thread sealed well over 11,000 packets.
      expect(down.nativeSealed).toBeGreaterThan(11_000);
      // The kernel hands the TUN device TCP super-packets, split here into equal-sized
      // segments: they leave in runs, one UDP GSO message each, and still arrive byte for byte.
      expect(down.nativeSendMessages).toBeGreaterThan(0);
      expect(down.nativeSendMessages).toBeLessThan(down.nativeSealed / 2);
    }, 120_000);
  }

  it("stops cleanly under a TCP transfer", async () => {
    const { daemon } = await startPair();
    expect(await ping(etNs, WG_TUNNEL, 3)).toBe(3);
    const port = 46000 + counter++;
    const server = scope.add(
      new WatchedChild(
        "tcp server",
        bed.spawn(wgNs, process.execPath, [TCP_TRANSFER_FIXTURE, "serve", String(port)]),
      ),
    );
    await waitFor("the TCP server to listen", () => server.output.includes('"listening"'));
    // Both ended by PID after the case, whatever state the stop leaves them in.
    const client = new WatchedChild(
      "tcp client",
      bed.spawn(etNs, process.execPath, [
        TCP_TRANSFER_FIXTURE,
        "send",
        WG_TUNNEL,
        String(port),
        "2000",
      ]),
    );
    scope.add(client);
    await new Promise((resolve) => setTimeout(resolve, 700));
    const down = await stop(daemon);
    expect(down.nativeSealed).toBeGreaterThan(100);
    expect(bed.exec(etNs, "ip", ["-o", "link", "show"])).not.toContain(`: s${tag}`);
  }, 120_000);
});
