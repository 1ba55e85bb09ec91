// The control socket's client side against the real server (uapi.ts) on a socket in a temp
// directory: the reply to `get=1` read back into what the device holds, and the one parser
// both `edgetun show` and `edgetun syncconf` use; syncconf's request carries only the
// difference and, applied, makes the device what the file says.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Device } from "../../src/core/device.js";
import { parseCidr } from "../../src/core/ipaddr.js";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { interfaceState } from "../../src/cli/show.js";
import { syncRequest } from "../../src/cli/syncconf.js";
import { parseConfig } from "../../src/host/config.js";
import { Reconfigurer, type ConfigChange } from "../../src/host/reconfigure.js";
import { UapiServer, handleGet, type UapiHost } from "../../src/host/uapi.js";
import {
  ZERO_KEY_HEX,
  parseGetReply,
  uapiGet,
  uapiRequest,
  type UapiDeviceState,
} from "../../src/host/uapi-client.js";

const hexOf = (base64: string) => decodeKey(base64).toString("hex");

/** A device behind the real server and reconfiguration queue, without sockets or routes. */
class Host implements UapiHost {
  readonly device: Device;
  readonly #queue = new Reconfigurer(this);
  constructor(privateKey: string) {
    this.device = new Device({ privateKey: decodeKey(privateKey) });
  }
  listenPort(): number {
    return 51820;
  }
  prepareListenPort() {
    return { commit: () => undefined, abort: () => undefined };
  }
  fwmark(): number {
    return 0;
  }
  setFwmark(): void {}
  reconfigure(change: ConfigChange, source: string): Promise<unknown> {
    return this.#queue.apply(change, source);
  }
}

describe("the control socket's client", () => {
  let directory: string;
  let server: UapiServer | null = null;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), "edgetun-uapi-client-"));
  });
  afterEach(async () => {
    await server?.close();
    server = null;
    await rm(directory, { recursive: true, force: true });
  });

  it("reads a get reply back into what the device holds", async () => {
    const hubKey = generatePrivateKey();
    const host = new Host(hubKey);
    const edges = Array.from({ length: 3 }, () => publicKeyOf(generatePrivateKey()));
    edges.forEach((edge, i) =>
      host.device.addPeer({
        publicKey: decodeKey(edge),
        endpoint: i === 0 ? { address: "192.0.2.7", port: 4000 + i } : null,
        allowedIps: [parseCidr(`10.1.${i}.0/24`), parseCidr(`10.99.0.${i + 2}/32`)],
        persistentKeepalive: i === 1 ? 25 : 0,
        ...(i === 2 ? { presharedKey: Buffer.alloc(32, 7) } : {}),
      }),
    );
    server = await UapiServer.listen("t0", host, { directory });
    const reply = await uapiGet("t0", directory);
    expect(reply).toEqual<UapiDeviceState>({
      privateKeyHex: hexOf(hubKey),
      listenPort: 51820,
      fwmark: 0,
      peers: edges.map((edge, i) => ({
        publicKeyHex: hexOf(edge),
        presharedKeyHex: i === 2 ? "07".repeat(32) : ZERO_KEY_HEX,
        endpoint: i === 0 ? "192.0.2.7:4000" : null,
        allowedIps: [`10.1.${i}.0/24`, `10.99.0.${i + 2}/32`],
        lastHandshakeSec: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: i === 1 ? 25 : 0,
      })),
    });
    // `edgetun show`'s terms: base64, the public key derived from the private one.
    const shown = interfaceState("t0", reply);
    expect(shown.publicKey).toBe(publicKeyOf(hubKey));
    expect(shown.peers.map((peer) => [peer.publicKey, peer.presharedKey])).toEqual(
      edges.map((edge, i) => [edge, i === 2]),
    );
  });

  it("reads a reply of thousands of peers that arrives in many chunks", async () => {
    const host = new Host(generatePrivateKey());
    for (let i = 0; i < 3000; i++) {
      host.device.addPeer({
        publicKey: decodeKey(publicKeyOf(generatePrivateKey())),
        allowedIps: [parseCidr(`10.${100 + (i >> 8)}.${i & 255}.1/32`)],
      });
    }
    server = await UapiServer.listen("t1", host, { directory });
    const reply = await uapiGet("t1", directory);
    expect(reply.peers).toHaveLength(3000);
    expect(reply.peers[2999]!.allowedIps).toEqual(["10.111.183.1/32"]);
  });

  it("says which errno refused a request", async () => {
    server = await UapiServer.listen("t2", new Host(generatePrivateKey()), { directory });
    await expect(uapiRequest("t2", "set=1\nbogus=1\n\n", directory)).rejects.toMatchObject({
      code: "ERR_UAPI_REQUEST",
      message: expect.stringMatching(/errno=-\d+ E[A-Z]+/) as unknown,
    });
    await expect(uapiRequest("none", "get=1\n\n", directory)).rejects.toMatchObject({
      code: "ERR_NO_INTERFACE",
    });
  });

  it("reads a reply of many 64 KiB chunks, the same again once the chunks are reused", async () => {
    const host = new Host(generatePrivateKey());
    // About 350 bytes a peer: some 20 chunks, each reply's chunks reused by the next.
    for (let i = 0; i < 4000; i++) {
      host.device.addPeer({
        publicKey: decodeKey(publicKeyOf(generatePrivateKey())),
        endpoint: { address: `192.0.2.${i & 255}`, port: 1024 + i },
        allowedIps: [parseCidr(`10.${i >> 8}.${i & 255}.0/24`)],
      });
    }
    server = await UapiServer.listen("t4", host, { directory });
    const expected = handleGet(host)
      .split("\n")
      .filter((line) => line !== "");
    expected.pop(); // errno=0, which the client takes off
    for (let round = 0; round < 3; round++) {
      // Two at once as well: neither may be handed chunks the other is still sending.
      const replies = await Promise.all([
        uapiRequest("t4", "get=1\n\n", directory),
        uapiRequest("t4", "get=1\n\n", directory),
      ]);
      for (const lines of replies) expect(lines).toEqual(expected);
    }
    expect(parseGetReply(Buffer.from(handleGet(host), "latin1")).peers).toHaveLength(4000);
  });

  it("syncconf sends only the difference, which makes the device the file", async () => {
    const hubKey = generatePrivateKey();
    const host = new Host(hubKey);
    const edges = Array.from({ length: 50 }, () => publicKeyOf(generatePrivateKey()));
    const section = (edge: string, i: number, pod = `10.1.${i}.0/24`) =>
      `[Peer]\nPublicKey = ${edge}\nAllowedIPs = 10.99.0.${i + 2}/32, ${pod}\n`;
    const before = `[Interface]\nPrivateKey = ${hubKey}\n${edges.map((e, i) => section(e, i)).join("")}`;
    const config = parseConfig(before, "hub.conf");
    server = await UapiServer.listen("t3", host, { directory });
    const get = () => uapiGet("t3", directory);
    // From no peers: every peer is sent, none removed.
    const first = syncRequest(
      config,
      await get(),
      config.peers.map(() => null),
    );
    expect(first.split("\n").filter((line) => line.startsWith("public_key="))).toHaveLength(50);
    await uapiRequest("t3", first, directory);
    const running = await get();
    expect(running.peers).toHaveLength(50);
    // Unchanged: nothing to send.
    expect(
      syncRequest(
        config,
        running,
        config.peers.map(() => null),
      ),
    ).toBe("set=1\n\n");

    // Peer 7's pod moves, peer 9 goes, a new one comes.
    const newcomer = publicKeyOf(generatePrivateKey());
    const after =
      `[Interface]\nPrivateKey = ${hubKey}\n` +
      edges
        .map((edge, i) => (i === 9 ? "" : section(edge, i, i === 7 ? "10.2.7.0/24" : undefined)))
        .join("") +
      section(newcomer, 60);
    const changed = parseConfig(after, "hub.conf");
    const request = syncRequest(
      changed,
      running,
      changed.peers.map(() => null),
    );
    expect(request.split("\n").filter((line) => line.startsWith("public_key="))).toEqual([
      `public_key=${hexOf(edges[9]!)}`,
      `public_key=${hexOf(edges[7]!)}`,
      `public_key=${hexOf(newcomer)}`,
    ]);
    await uapiRequest("t3", request, directory);
    const synced = await get();
    const wanted = new Map(
      changed.peers.map((peer) => [
        Buffer.from(peer.publicKey).toString("hex"),
        peer.allowedIps.length,
      ]),
    );
    expect(synced.peers.map((peer) => [peer.publicKeyHex, peer.allowedIps.length])).toEqual(
      expect.arrayContaining([...wanted]),
    );
    expect(synced.peers).toHaveLength(50);
    const moved = synced.peers.find((peer) => peer.publicKeyHex === hexOf(edges[7]!))!;
    expect(moved.allowedIps.sort()).toEqual(["10.2.7.0/24", "10.99.0.9/32"]);
  });
});
