// The protocol against Debian's wireguard-go: handshakes both ways, data both ways, with and
// without a pre-shared key, IPv4 and IPv6 inside the tunnel. Each side lives in a network
// namespace this test creates; edgetun runs as test/support/fixtures/udp-peer (a Device on a UDP socket).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePresharedKey, generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, netnsUnavailableReason, waitFor } from "../support/netns.js";
import { UDP_PEER_FIXTURE, UdpPeer } from "../support/udp-peer.js";

const skipReason =
  netnsUnavailableReason(["wireguard-go", "wg", "ping"]) ??
  (existsSync(UDP_PEER_FIXTURE) ? null : "needs the build (npm run build)");
if (skipReason) console.warn(`interop with wireguard-go skipped: ${skipReason}`);

describe.skipIf(skipReason !== null)("interop with wireguard-go", () => {
  const bed = new Testbed();
  let wgNs = "";
  let etNs = "";
  const wgInterface = `wg${bed.id.slice(-8)}`;
  const wgPrivate = generatePrivateKey();
  const wgPublic = publicKeyOf(wgPrivate);

  beforeAll(async () => {
    wgNs = bed.namespace("wg");
    etNs = bed.namespace("et");
    bed.link(wgNs, "10.201.0.2/24", etNs, "10.201.0.1/24");
    bed.spawn(wgNs, "wireguard-go", ["-f", wgInterface]);
    await waitFor("wireguard-go's socket", () =>
      existsSync(`/var/run/wireguard/${wgInterface}.sock`),
    );
    bed.exec(wgNs, "ip", ["addr", "add", "10.202.0.2/24", "dev", wgInterface]);
    bed.exec(wgNs, "ip", ["addr", "add", "fd02::2/64", "dev", wgInterface]);
    bed.exec(wgNs, "ip", ["link", "set", wgInterface, "up"]);
  }, 30_000);

  const keyDir = mkdtempSync(join(tmpdir(), "edgetun-keys-"));
  afterAll(() => {
    bed.cleanup();
    rmSync(keyDir, { recursive: true, force: true });
  });

  /** `wg` reads keys from files only. */
  function keyFile(name: string, key: string): string {
    const path = join(keyDir, name);
    writeFileSync(path, `${key}\n`, { mode: 0o600 });
    return path;
  }

  /** Configures wireguard-go's one peer and starts an edgetun peer in the other namespace. */
  async function startPair(options: { psk: boolean; edgetunKnowsEndpoint: boolean }) {
    const etPrivate = generatePrivateKey();
    const etPublic = publicKeyOf(etPrivate);
    const psk = options.psk ? generatePresharedKey() : undefined;
    const port = 40000 + Math.floor(Math.random() * 20000);
    // Replace whatever peer an earlier case left, so each case starts from nothing.
    const args = ["set", wgInterface, "private-key", keyFile("wg.key", wgPrivate)];
    bed.exec(wgNs, "wg", [...args, "listen-port", "51820"]);
    for (const line of bed.exec(wgNs, "wg", ["show", wgInterface, "peers"]).split("\n")) {
      if (line.trim()) bed.exec(wgNs, "wg", ["set", wgInterface, "peer", line.trim(), "remove"]);
    }
    const peerArgs = [
      "set",
      wgInterface,
      "peer",
      etPublic,
      "allowed-ips",
      "10.202.0.1/32,fd02::1/128",
    ];
    peerArgs.push("endpoint", `10.201.0.1:${port}`);
    if (psk) peerArgs.push("preshared-key", keyFile("psk", psk));
    bed.exec(wgNs, "wg", peerArgs);

    const config = {
      privateKey: etPrivate,
      listenPort: port,
      address: "10.202.0.1",
      address6: "fd02::1",
      peers: [
        {
          publicKey: wgPublic,
          ...(psk ? { presharedKey: psk } : {}),
          ...(options.edgetunKnowsEndpoint
            ? { endpoint: { address: "10.201.0.2", port: 51820 } }
            : {}),
          allowedIps: ["10.202.0.0/24", "fd02::/64"],
        },
      ],
    };
    const peer = UdpPeer.spawn(bed, etNs, config);
    await peer.ready();
    return { peer, etPublic };
  }

  for (const psk of [false, true]) {
    for (const family of ["IPv4", "IPv6"] as const) {
      it(`edgetun initiates; ${family} pings are answered${psk ? " (pre-shared key)" : ""}`, async () => {
        const { peer } = await startPair({ psk, edgetunKnowsEndpoint: true });
        try {
          const [src, dst] =
            family === "IPv4" ? ["10.202.0.1", "10.202.0.2"] : ["fd02::1", "fd02::2"];
          for (let seq = 1; seq <= 3; seq++) {
            peer.command({ cmd: "ping", src, dst, id: 77, seq, size: 1000 });
            await waitFor(`echo reply ${seq}`, () =>
              peer.has((e) => e.event === "echo-reply" && e.seq === seq && e.src === dst),
            );
          }
          const shown = bed.exec(wgNs, "wg", ["show", wgInterface, "latest-handshakes"]);
          expect(Number(shown.trim().split(/\s+/)[1])).toBeGreaterThan(0);
        } finally {
          peer.command({ cmd: "exit" });
        }
      });
    }
  }

  it("wireguard-go initiates; edgetun responds and answers its pings", async () => {
    const { peer } = await startPair({ psk: true, edgetunKnowsEndpoint: false });
    try {
      const out = bed.exec(wgNs, "ping", ["-c", "3", "-i", "0.2", "-W", "3", "10.202.0.1"]);
      expect(out).toMatch(/3 received/);
      const out6 = bed.exec(wgNs, "ping", ["-6", "-c", "2", "-i", "0.2", "-W", "3", "fd02::1"]);
      expect(out6).toMatch(/2 received/);
      // The sync pings above blocked this process's event loop; let the peer's output arrive.
      await waitFor(
        "the peer's report of 5 echo requests",
        () => peer.events.filter((e) => e.event === "echo-request").length === 5,
      );
    } finally {
      peer.command({ cmd: "exit" });
    }
  });
});
