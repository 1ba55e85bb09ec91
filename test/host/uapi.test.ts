import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Device } from "../../src/core/device.js";
import { formatCidr, parseCidr } from "../../src/core/ipaddr.js";
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import {
  Reconfigurer,
  type ConfigChange,
  type PendingListenPort,
  type ReconfigurationHost,
} from "../../src/host/reconfigure.js";
import {
  DEFAULT_UAPI_DIRECTORY,
  UapiServer,
  handleGet,
  handleSet,
  uapiDiagnostics,
  type UapiDiagnostic,
  type UapiHost,
} from "../../src/host/uapi.js";

const EINVAL = -22;
const EPROTO = -71;
const EMSGSIZE = -90;
const EADDRINUSE = -98;
const ZERO_KEY = "0".repeat(64);

interface TestKey {
  base64: string;
  hex: string;
  raw: Buffer;
  publicBase64: string;
  publicHex: string;
  publicRaw: Buffer;
}

function newKey(): TestKey {
  const base64 = generatePrivateKey();
  const publicBase64 = publicKeyOf(base64);
  const raw = decodeKey(base64);
  const publicRaw = decodeKey(publicBase64);
  return {
    base64,
    hex: raw.toString("hex"),
    raw,
    publicBase64,
    publicHex: publicRaw.toString("hex"),
    publicRaw,
  };
}

/**
 * Records what the control socket asks of the daemon; one port can be made "in use". Changes
 * go through the real reconfiguration queue (src/host/reconfigure.ts), without routes.
 */
class FakeHost implements UapiHost, ReconfigurationHost {
  port = 51820;
  mark = 0;
  busyPort: number | null = null;
  readonly portRequests: number[] = [];
  /** Milliseconds prepareListenPort takes, to see concurrent sets queue behind it. */
  portDelayMs = 0;
  readonly #queue = new Reconfigurer(this);

  constructor(readonly device: Device) {}

  listenPort(): number {
    return this.port;
  }

  async prepareListenPort(port: number): Promise<PendingListenPort> {
    this.portRequests.push(port);
    if (this.portDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.portDelayMs));
    if (port === this.busyPort) {
      throw Object.assign(new Error(`port ${port} is in use`), { code: "EADDRINUSE" });
    }
    return { commit: () => (this.port = port), abort: () => undefined };
  }

  fwmark(): number {
    return this.mark;
  }

  setFwmark(mark: number): void {
    this.mark = mark;
  }

  reconfigure(change: ConfigChange, source: string): Promise<unknown> {
    return this.#queue.apply(change, source);
  }
}

function newHost(): { host: FakeHost; device: Device; key: TestKey } {
  const key = newKey();
  const device = new Device({ privateKey: key.raw });
  return { host: new FakeHost(device), device, key };
}

function allowedIpsOf(device: Device, publicKey: Uint8Array): string[] {
  const peer = device.peer(publicKey);
  if (!peer) throw new Error("no such peer");
  return device.allowedIps.entriesFor(peer).map(({ address, cidr }) => formatCidr(address, cidr));
}

function getLines(host: UapiHost): string[] {
  const reply = handleGet(host);
  expect(reply.endsWith("errno=0\n\n")).toBe(true);
  return reply.slice(0, -"\nerrno=0\n\n".length).split("\n");
}

describe("handleGet", () => {
  it("lists the device: private key, listen port, no fwmark when it is 0", () => {
    const { host, key } = newHost();
    expect(handleGet(host)).toBe(`private_key=${key.hex}\nlisten_port=51820\nerrno=0\n\n`);
    host.mark = 0x1234;
    expect(getLines(host)).toContain(`fwmark=${0x1234}`);
  });

  it("leaves out the private key when the device has none", () => {
    const host = new FakeHost(new Device());
    expect(handleGet(host)).toBe("listen_port=51820\nerrno=0\n\n");
  });

  it("lists every peer field in protocol order", () => {
    const { host, device } = newHost();
    const a = newKey();
    const b = newKey();
    const psk = randomBytes(32);
    const peerA = device.addPeer({
      publicKey: a.publicRaw,
      presharedKey: psk,
      endpoint: { address: "192.0.2.1", port: 51820 },
      allowedIps: [parseCidr("fd00::/64"), parseCidr("10.0.0.0/24"), parseCidr("10.9.0.1/32")],
      persistentKeepalive: 25,
    });
    peerA.lastHandshakeWallMs = 1_700_000_000_123;
    peerA.rxBytes = 1234;
    peerA.txBytes = 5678;
    device.addPeer({ publicKey: b.publicRaw, endpoint: { address: "2001:db8::1", port: 7 } });

    expect(getLines(host).slice(2)).toEqual([
      `public_key=${a.publicHex}`,
      `preshared_key=${psk.toString("hex")}`,
      "protocol_version=1",
      "endpoint=192.0.2.1:51820",
      "last_handshake_time_sec=1700000000",
      "last_handshake_time_nsec=123000000",
      "tx_bytes=5678",
      "rx_bytes=1234",
      "persistent_keepalive_interval=25",
      "allowed_ip=10.0.0.0/24",
      "allowed_ip=10.9.0.1/32",
      "allowed_ip=fd00::/64",
      `public_key=${b.publicHex}`,
      `preshared_key=${ZERO_KEY}`,
      "protocol_version=1",
      "endpoint=[2001:db8::1]:7",
      "last_handshake_time_sec=0",
      "last_handshake_time_nsec=0",
      "tx_bytes=0",
      "rx_bytes=0",
      "persistent_keepalive_interval=0",
    ]);
  });
});

describe("handleSet", () => {
  it("sets the private key, listen port and fwmark; an all-zero key removes the key", async () => {
    const { host, device } = newHost();
    const next = newKey();
    expect(
      await handleSet(host, [`private_key=${next.hex}`, "listen_port=40000", "fwmark=77"]),
    ).toBe(0);
    expect(device.publicKey).toEqual(next.publicRaw);
    expect(host.port).toBe(40000);
    expect(host.mark).toBe(77);

    // The same port again is not a rebind.
    expect(await handleSet(host, ["listen_port=40000", "fwmark=0"])).toBe(0);
    expect(host.portRequests).toEqual([40000]);
    expect(host.mark).toBe(0);

    expect(await handleSet(host, [`private_key=${ZERO_KEY}`])).toBe(0);
    expect(device.identity).toBeNull();
    expect(handleGet(host)).not.toContain("private_key=");
  });

  it("accepts upper-case hex", async () => {
    const { host, device } = newHost();
    const next = newKey();
    expect(await handleSet(host, [`private_key=${next.hex.toUpperCase()}`])).toBe(0);
    expect(device.publicKey).toEqual(next.publicRaw);
  });

  it("creates a peer with every peer key", async () => {
    const { host, device } = newHost();
    const peer = newKey();
    const psk = randomBytes(32).toString("hex");
    const status = await handleSet(host, [
      `public_key=${peer.publicHex}`,
      "protocol_version=1",
      `preshared_key=${psk}`,
      "endpoint=198.51.100.4:12345",
      "persistent_keepalive_interval=25",
      "replace_allowed_ips=true",
      "allowed_ip=10.1.0.0/16",
      "allowed_ip=fd00:1::/64",
    ]);
    expect(status).toBe(0);
    const created = device.peer(peer.publicRaw)!;
    expect(created.presharedKey.toString("hex")).toBe(psk);
    expect(created.endpoint).toEqual({ address: "198.51.100.4", port: 12345 });
    expect(created.persistentKeepalive).toBe(25);
    expect(allowedIpsOf(device, peer.publicRaw)).toEqual(["10.1.0.0/16", "fd00:1::/64"]);

    // A zero pre-shared key clears it; keepalive 0 turns it off.
    expect(
      await handleSet(host, [
        `public_key=${peer.publicHex}`,
        `preshared_key=${ZERO_KEY}`,
        "persistent_keepalive_interval=0",
      ]),
    ).toBe(0);
    expect(created.presharedKey.equals(Buffer.alloc(32))).toBe(true);
    expect(created.persistentKeepalive).toBe(0);
  });

  it("stores IPv6 endpoints in canonical form, zone included", async () => {
    const { host, device } = newHost();
    const peer = newKey();
    await handleSet(host, [`public_key=${peer.publicHex}`, "endpoint=[2001:DB8:0:0::1]:51820"]);
    expect(device.peer(peer.publicRaw)!.endpoint).toEqual({ address: "2001:db8::1", port: 51820 });
    await handleSet(host, [`public_key=${peer.publicHex}`, "endpoint=[fe80::1%eth0]:1"]);
    expect(device.peer(peer.publicRaw)!.endpoint).toEqual({
      address: "fe80::1",
      port: 1,
      zone: "eth0",
    });
    expect(getLines(host)).toContain("endpoint=[fe80::1%eth0]:1");
  });

  it("adds allowed IPs, or replaces them with replace_allowed_ips", async () => {
    const { host, device } = newHost();
    const peer = newKey();
    await handleSet(host, [`public_key=${peer.publicHex}`, "allowed_ip=10.0.0.0/24"]);
    await handleSet(host, [`public_key=${peer.publicHex}`, "allowed_ip=10.0.1.0/24"]);
    expect(allowedIpsOf(device, peer.publicRaw)).toEqual(["10.0.0.0/24", "10.0.1.0/24"]);

    // Prefixes before replace_allowed_ips in the same section go too, as they would line by line.
    await handleSet(host, [
      `public_key=${peer.publicHex}`,
      "allowed_ip=10.0.2.0/24",
      "replace_allowed_ips=true",
      "allowed_ip=10.0.3.0/24",
    ]);
    expect(allowedIpsOf(device, peer.publicRaw)).toEqual(["10.0.3.0/24"]);

    await handleSet(host, [`public_key=${peer.publicHex}`, "replace_allowed_ips=true"]);
    expect(allowedIpsOf(device, peer.publicRaw)).toEqual([]);
  });

  it("moves a prefix to the peer that claims it last", async () => {
    const { host, device } = newHost();
    const a = newKey();
    const b = newKey();
    await handleSet(host, [
      `public_key=${a.publicHex}`,
      "allowed_ip=10.0.0.0/24",
      `public_key=${b.publicHex}`,
      "allowed_ip=10.0.0.0/24",
    ]);
    expect(allowedIpsOf(device, a.publicRaw)).toEqual([]);
    expect(allowedIpsOf(device, b.publicRaw)).toEqual(["10.0.0.0/24"]);
  });

  it("replace_peers removes every peer not listed again", async () => {
    const { host, device } = newHost();
    const [a, b, c] = [newKey(), newKey(), newKey()];
    await handleSet(host, [
      `public_key=${a.publicHex}`,
      "allowed_ip=10.0.0.1/32",
      `public_key=${b.publicHex}`,
      "allowed_ip=10.0.0.2/32",
    ]);
    expect(
      await handleSet(host, [
        "replace_peers=true",
        `public_key=${b.publicHex}`,
        `public_key=${c.publicHex}`,
        "allowed_ip=10.0.0.3/32",
      ]),
    ).toBe(0);
    expect([...device.peers.keys()].sort()).toEqual([b.publicBase64, c.publicBase64].sort());
    // b came back as a new peer: its old prefixes went with the old one.
    expect(allowedIpsOf(device, b.publicRaw)).toEqual([]);
    expect(device.allowedIps.size).toBe(1);
  });

  it("update_only changes an existing peer and never creates one", async () => {
    const { host, device } = newHost();
    const [a, b] = [newKey(), newKey()];
    await handleSet(host, [`public_key=${a.publicHex}`]);
    expect(
      await handleSet(host, [
        `public_key=${a.publicHex}`,
        "update_only=true",
        "endpoint=192.0.2.9:9",
        `public_key=${b.publicHex}`,
        "update_only=true",
        "allowed_ip=10.0.0.0/8",
      ]),
    ).toBe(0);
    expect(device.peer(a.publicRaw)!.endpoint).toEqual({ address: "192.0.2.9", port: 9 });
    expect(device.peer(b.publicRaw)).toBeUndefined();
    expect(device.allowedIps.size).toBe(0);
  });

  it("remove deletes the peer and its allowed IPs; removing an unknown peer is no error", async () => {
    const { host, device } = newHost();
    const [a, b] = [newKey(), newKey()];
    await handleSet(host, [`public_key=${a.publicHex}`, "allowed_ip=10.0.0.0/24"]);
    expect(
      await handleSet(host, [
        `public_key=${a.publicHex}`,
        "remove=true",
        `public_key=${b.publicHex}`,
        "remove=true",
      ]),
    ).toBe(0);
    expect(device.peers.size).toBe(0);
    expect(device.allowedIps.size).toBe(0);
  });

  it("ignores a peer whose public key is the device's own", async () => {
    const { host, device, key } = newHost();
    expect(await handleSet(host, [`public_key=${key.publicHex}`, "allowed_ip=10.0.0.0/8"])).toBe(0);
    expect(device.peers.size).toBe(0);
  });

  describe("rejects a bad request and leaves everything as it was", () => {
    const peer = newKey();
    const cases: Array<[string, string[], number]> = [
      ["private key too short", [`private_key=${"a".repeat(63)}`], EINVAL],
      ["private key not hex", [`private_key=${"zz".repeat(32)}`], EINVAL],
      ["public key not hex", [`public_key=${"g".repeat(64)}`], EINVAL],
      [
        "preshared key too long",
        [`public_key=${peer.publicHex}`, `preshared_key=${"0".repeat(66)}`],
        EINVAL,
      ],
      ["unknown device key", ["frobnicate=1"], EPROTO],
      ["unknown peer key", [`public_key=${peer.publicHex}`, "frobnicate=1"], EPROTO],
      ["line without =", ["listen_port"], EPROTO],
      ["empty key", ["=1"], EPROTO],
      ["read-only key", [`public_key=${peer.publicHex}`, "rx_bytes=1"], EINVAL],
      ["allowed_ip before public_key", ["allowed_ip=10.0.0.0/8"], EINVAL],
      ["device key inside a peer", [`public_key=${peer.publicHex}`, "listen_port=1"], EINVAL],
      ["prefix too long", [`public_key=${peer.publicHex}`, "allowed_ip=10.0.0.0/33"], EINVAL],
      ["prefix without length", [`public_key=${peer.publicHex}`, "allowed_ip=10.0.0.1"], EINVAL],
      ["prefix not an address", [`public_key=${peer.publicHex}`, "allowed_ip=ten/8"], EINVAL],
      ["endpoint without port", [`public_key=${peer.publicHex}`, "endpoint=192.0.2.1"], EINVAL],
      [
        "endpoint port too big",
        [`public_key=${peer.publicHex}`, "endpoint=192.0.2.1:65536"],
        EINVAL,
      ],
      ["endpoint by name", [`public_key=${peer.publicHex}`, "endpoint=vpn.example:51820"], EINVAL],
      [
        "IPv6 endpoint without brackets",
        [`public_key=${peer.publicHex}`, "endpoint=::1:51820"],
        EINVAL,
      ],
      [
        "bracketed IPv4 endpoint",
        [`public_key=${peer.publicHex}`, "endpoint=[192.0.2.1]:1"],
        EINVAL,
      ],
      ["protocol version 2", [`public_key=${peer.publicHex}`, "protocol_version=2"], EINVAL],
      [
        "keepalive too big",
        [`public_key=${peer.publicHex}`, "persistent_keepalive_interval=65536"],
        EINVAL,
      ],
      [
        "negative keepalive",
        [`public_key=${peer.publicHex}`, "persistent_keepalive_interval=-1"],
        EINVAL,
      ],
      ["listen port too big", ["listen_port=65536"], EINVAL],
      ["fwmark too big", ["fwmark=4294967296"], EINVAL],
      ["fwmark in hex", ["fwmark=0x10"], EINVAL],
      ["replace_peers=false", ["replace_peers=false"], EINVAL],
      ["remove=yes", [`public_key=${peer.publicHex}`, "remove=yes"], EINVAL],
      ["update_only=1", [`public_key=${peer.publicHex}`, "update_only=1"], EINVAL],
      ["replace_allowed_ips=", [`public_key=${peer.publicHex}`, "replace_allowed_ips="], EINVAL],
    ];
    for (const [name, badLines, errno] of cases) {
      it(`${name}: ${errno}`, async () => {
        const { host, device } = newHost();
        const existing = newKey();
        await handleSet(host, [
          `public_key=${existing.publicHex}`,
          "endpoint=192.0.2.50:50",
          "allowed_ip=10.50.0.0/16",
        ]);
        const before = handleGet(host);
        // Valid changes of every kind surround the error: none of them may be applied.
        const deviceLines = [
          `private_key=${newKey().hex}`,
          "listen_port=40001",
          "fwmark=5",
          "replace_peers=true",
        ];
        const peerLines = [
          `public_key=${newKey().publicHex}`,
          "allowed_ip=10.60.0.0/16",
          `public_key=${existing.publicHex}`,
          "remove=true",
        ];
        const inPeerSection = badLines[0]!.startsWith("public_key=");
        const lines = inPeerSection
          ? [...deviceLines, ...peerLines, ...badLines]
          : [...deviceLines, ...badLines, ...peerLines];
        expect(await handleSet(host, lines)).toBe(errno);
        expect(handleGet(host)).toBe(before);
        expect(host.portRequests).toEqual([]);
        expect(device.peers.size).toBe(1);
      });
    }
  });

  it("reports the reason of a rejected set on the diagnostics channel", async () => {
    const { host } = newHost();
    const seen: UapiDiagnostic[] = [];
    const listener = (message: unknown): void => void seen.push(message as UapiDiagnostic);
    subscribe(uapiDiagnostics.name, listener);
    try {
      await handleSet(host, ["listen_port=1", "fwmark=x"]);
    } finally {
      unsubscribe(uapiDiagnostics.name, listener);
    }
    expect(seen).toEqual([
      { operation: "set", errno: EINVAL, reason: expect.stringMatching(/^line 2 \(fwmark\)/) },
    ]);
  });

  it("answers -EADDRINUSE when the port cannot be bound, and undoes the fwmark", async () => {
    const { host, device } = newHost();
    host.busyPort = 40002;
    const before = handleGet(host);
    const status = await handleSet(host, [
      "listen_port=40002",
      "fwmark=9",
      `public_key=${newKey().publicHex}`,
    ]);
    expect(status).toBe(EADDRINUSE);
    expect(host.port).toBe(51820);
    expect(host.mark).toBe(0);
    expect(device.peers.size).toBe(0);
    expect(handleGet(host)).toBe(before);
  });

  it("maps any host error code to its errno, and an unknown failure to -EIO", async () => {
    const { host, device } = newHost();
    host.setFwmark = () => {
      throw Object.assign(new Error("not permitted"), { code: "EPERM" });
    };
    expect(await handleSet(host, ["fwmark=1", `public_key=${newKey().publicHex}`])).toBe(-1);
    host.prepareListenPort = () => Promise.reject(new Error("no code"));
    expect(await handleSet(host, ["listen_port=1", `public_key=${newKey().publicHex}`])).toBe(-5);
    expect(device.peers.size).toBe(0);
  });

  it("runs concurrent sets one after another", async () => {
    const { host, device } = newHost();
    host.portDelayMs = 50;
    const peer = newKey();
    const first = handleSet(host, ["listen_port=40003", `public_key=${peer.publicHex}`]);
    const second = handleSet(host, [`public_key=${peer.publicHex}`, "remove=true"]);
    expect(await Promise.all([first, second])).toEqual([0, 0]);
    expect(device.peer(peer.publicRaw)).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------
// The socket

/** Sends `input` and collects everything until the server closes or `until` matches. */
function exchange(
  path: string,
  input: string | Buffer,
  options: { until?: (text: string) => boolean; end?: boolean } = {},
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = "";
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve({ text, closed });
    };
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (options.until?.(text)) finish(false);
    });
    socket.on("close", () => finish(true));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      // The server may close while we are still writing a request it has refused.
      if (error.code === "EPIPE" || error.code === "ECONNRESET") return;
      reject(error);
    });
    socket.on("connect", () => {
      if (options.end) socket.end(input);
      else socket.write(input);
    });
  });
}

async function waitUntil(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function countReplies(text: string): number {
  return text.split(/errno=-?[0-9]+\n\n/).length - 1;
}

describe("UapiServer", () => {
  let directory: string;
  let server: UapiServer | null = null;

  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), "edgetun-uapi-"));
  });

  afterEach(async () => {
    await server?.close();
    server = null;
    await rm(directory, { recursive: true, force: true });
  });

  it("listens on <directory>/<name>.sock, mode 0600, in a 0700 directory it creates", async () => {
    const { host } = newHost();
    const nested = join(directory, "run", "wireguard");
    server = await UapiServer.listen("wg0", host, { directory: nested });
    expect(server.path).toBe(join(nested, "wg0.sock"));
    expect((await stat(nested)).mode & 0o777).toBe(0o700);
    const socketStats = await stat(server.path);
    expect(socketStats.isSocket()).toBe(true);
    expect(socketStats.mode & 0o777).toBe(0o600);
    // Bound under a staging name and linked into place: nothing of it is left behind.
    expect(await readdir(nested)).toEqual(["wg0.sock"]);
    await server.close();
    expect(existsSync(join(nested, "wg0.sock"))).toBe(false);
  });

  it("answers get and set, several requests on one connection in order", async () => {
    const { host, device, key } = newHost();
    server = await UapiServer.listen("wg0", host, { directory });
    const peer = newKey();
    const requests =
      "get=1\n\n" +
      `set=1\npublic_key=${peer.publicHex}\nallowed_ip=10.0.0.0/24\n\n` +
      "set=1\nbogus=1\n\n" +
      "get=1\n\n";
    const { text } = await exchange(server.path, requests, {
      until: (t) => countReplies(t) === 4,
    });
    const replies = text.split(/(?<=errno=-?[0-9]+\n\n)/);
    expect(replies).toEqual([
      `private_key=${key.hex}\nlisten_port=51820\nerrno=0\n\n`,
      "errno=0\n\n",
      `errno=${EPROTO}\n\n`,
      handleGet(host),
    ]);
    expect(replies[3]).toContain("allowed_ip=10.0.0.0/24");
    expect(device.peers.size).toBe(1);
  });

  it("answers a client that half-closes after its request", async () => {
    const { host } = newHost();
    host.portDelayMs = 20;
    server = await UapiServer.listen("wg0", host, { directory });
    const { text, closed } = await exchange(server.path, "set=1\nlisten_port=40100\n\n", {
      end: true,
    });
    expect(text).toBe("errno=0\n\n");
    expect(closed).toBe(true);
    expect(host.port).toBe(40100);
  });

  it("serves many connections at once", async () => {
    const { host } = newHost();
    server = await UapiServer.listen("wg0", host, { directory });
    const path = server.path;
    const peers = Array.from({ length: 40 }, () => newKey());
    const results = await Promise.all(
      peers.map((peer, i) =>
        exchange(path, `set=1\npublic_key=${peer.publicHex}\nallowed_ip=10.0.${i}.0/24\n\n`, {
          until: (t) => countReplies(t) === 1,
        }),
      ),
    );
    expect(results.map((r) => r.text)).toEqual(peers.map(() => "errno=0\n\n"));
    expect(host.device.peers.size).toBe(40);
    const gets = await Promise.all(
      peers.map(() => exchange(path, "get=1\n\n", { until: (t) => countReplies(t) === 1 })),
    );
    for (const get of gets) expect(get.text).toBe(handleGet(host));
  });

  describe("bounds what hostile clients can hold", () => {
    const ENOBUFS = -105;

    /** Opens a connection, writes `input` and leaves it open; resolves once written. */
    function hold(path: string, input: string): Promise<Socket> {
      return new Promise((resolve, reject) => {
        const socket = connect(path);
        socket.on("error", (error: NodeJS.ErrnoException) => {
          if (error.code !== "EPIPE" && error.code !== "ECONNRESET") reject(error);
        });
        socket.on("connect", () => socket.write(input, () => resolve(socket)));
      });
    }

    function closedWithin(socket: Socket, ms: number): Promise<string> {
      return new Promise((resolve, reject) => {
        let text = "";
        socket.on("data", (chunk: Buffer) => (text += chunk.toString("latin1")));
        const timer = setTimeout(() => reject(new Error(`still open after ${ms} ms`)), ms);
        socket.on("close", () => {
          clearTimeout(timer);
          resolve(text);
        });
      });
    }

    it("closes a connection that goes silent, and one that drips a request too slowly", async () => {
      const { host } = newHost();
      server = await UapiServer.listen("wg0", host, {
        directory,
        idleTimeoutMs: 200,
        requestTimeoutMs: 600,
      });
      const silent = await hold(server.path, "set=1\npublic_key=");
      const drip = await hold(server.path, "set=1\n");
      const dripping = setInterval(() => drip.write("allowed_ip=10.0.0.1/32\n"), 50);
      try {
        const started = Date.now();
        await closedWithin(silent, 2_000);
        expect(Date.now() - started).toBeLessThan(1_000);
        await closedWithin(drip, 2_000);
        expect(Date.now() - started).toBeGreaterThanOrEqual(500);
      } finally {
        clearInterval(dripping);
      }
      await waitUntil(() => server!.load.connections === 0);
      expect(server.load).toEqual({ connections: 0, bufferedBytes: 0 });
      // The half-sent set changed nothing.
      expect(host.device.peers.size).toBe(0);
    });

    it("caps connections and buffered bytes; all of it returns when the clients go", async () => {
      const { host } = newHost();
      server = await UapiServer.listen("wg0", host, {
        directory,
        maxConnections: 20,
        maxBufferedBytes: 8 << 20,
      });
      const path = server.path;
      const partial = "set=1\n" + "allowed_ip=10.0.0.1/32\n".repeat((1 << 20) / 23);
      const attempts = 40;
      const sockets = await Promise.all(
        Array.from({ length: attempts }, () => hold(path, partial)),
      );
      const outcomes = sockets.map((socket) => closedWithin(socket, 5_000).catch(() => "open"));
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Twenty connections at most; of those, only as many as 8 MiB holds keep their bytes.
      expect(server.load.connections).toBeLessThanOrEqual(20);
      expect(server.load.bufferedBytes).toBeLessThanOrEqual(8 << 20);
      // A well-behaved client is still served, as soon as there is room.
      for (const socket of sockets) socket.destroy();
      const results = await Promise.all(outcomes);
      expect(results.filter((text) => text === `errno=${ENOBUFS}\n\n`).length).toBeGreaterThan(0);
      await waitUntil(() => server!.load.connections === 0);
      expect(server.load).toEqual({ connections: 0, bufferedBytes: 0 });
      const get = await exchange(path, "get=1\n\n", { until: (t) => countReplies(t) === 1 });
      expect(get.text).toBe(handleGet(host));
    });

    // Each new peer costs a Diffie-Hellman (the precomputed static-static secret): seconds.
    it("takes a set of 20,000 peers, as wg syncconf sends for a large fleet", async () => {
      const { host, device } = newHost();
      server = await UapiServer.listen("wg0", host, { directory });
      const lines = ["set=1", "replace_peers=true"];
      for (let i = 0; i < 20_000; i++) {
        const key = Buffer.alloc(32);
        key.writeUInt32BE(i + 1, 0);
        key[31] = 0x40;
        lines.push(
          `public_key=${key.toString("hex")}`,
          "replace_allowed_ips=true",
          `endpoint=192.0.2.${i % 250}:${1024 + (i % 60000)}`,
          `allowed_ip=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`,
          `allowed_ip=172.${16 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}/32`,
        );
      }
      const request = lines.join("\n") + "\n\n";
      expect(request.length).toBeGreaterThan(1 << 20);
      const { text } = await exchange(server.path, request, {
        until: (t) => countReplies(t) === 1,
      });
      expect(text).toBe("errno=0\n\n");
      expect(device.peers.size).toBe(20_000);
      expect(server.load.bufferedBytes).toBe(0);
    }, 120_000);
  });

  it("answers -EIO when the host fails during a get, and keeps serving", async () => {
    const { host } = newHost();
    server = await UapiServer.listen("wg0", host, { directory });
    const listenPort = host.listenPort.bind(host);
    host.listenPort = () => {
      throw new Error("socket layer gone");
    };
    const first = await exchange(server.path, "get=1\n\n", { until: (t) => countReplies(t) === 1 });
    expect(first.text).toBe("errno=-5\n\n");
    host.listenPort = listenPort;
    const second = await exchange(server.path, "get=1\n\n", {
      until: (t) => countReplies(t) === 1,
    });
    expect(second.text).toBe(handleGet(host));
  });

  describe("answers garbage with an errno and closes, and keeps serving others", () => {
    const cases: Array<[string, () => string | Buffer, number]> = [
      ["an unknown operation", () => "hello\n", EPROTO],
      ["an empty line where an operation belongs", () => "\n", EPROTO],
      ["get=1 with arguments", () => "get=1\nprivate_key=00\n\n", EINVAL],
      ["a line over 4 KiB", () => "set=1\n" + "a".repeat(8192), EMSGSIZE],
      [
        "a request over the request limit",
        () => "set=1\n" + "allowed_ip=10.0.0.1/32\n".repeat((1 << 20) / 20),
        EMSGSIZE,
      ],
      ["binary noise", () => Buffer.concat([randomBytes(5000), Buffer.from("\n\n")]), EPROTO],
    ];
    for (const [name, input, errno] of cases) {
      it(name, async () => {
        const { host } = newHost();
        server = await UapiServer.listen("wg0", host, { directory, maxRequestBytes: 1 << 20 });
        const before = handleGet(host);
        const { text, closed } = await exchange(server.path, input());
        expect(text).toBe(`errno=${errno}\n\n`);
        expect(closed).toBe(true);
        expect(handleGet(host)).toBe(before);
        const again = await exchange(server.path, "get=1\n\n", {
          until: (t) => countReplies(t) === 1,
        });
        expect(again.text).toBe(before);
      });
    }
  });

  for (const [left, name] of [
    ["a crashed daemon", "wg0.sock"],
    ["a start that crashed before its socket was linked into place", ".wg0.sock.new"],
  ] as const) {
    it(`replaces a stale socket left by ${left}`, async () => {
      const path = join(directory, name);
      // A process that listens and is then killed leaves its socket file behind.
      const child = spawn(
        process.execPath,
        [
          "-e",
          `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      child.kill("SIGKILL");
      await new Promise((resolve) => child.once("exit", resolve));
      expect((await stat(path)).isSocket()).toBe(true);

      const { host } = newHost();
      server = await UapiServer.listen("wg0", host, { directory });
      const { text } = await exchange(server.path, "get=1\n\n", {
        until: (t) => countReplies(t) === 1,
      });
      expect(text).toBe(handleGet(host));
      expect(await readdir(directory)).toEqual(["wg0.sock"]);
    });
  }

  it("refuses to start when another daemon answers on the socket", async () => {
    const { host } = newHost();
    server = await UapiServer.listen("wg0", host, { directory });
    const second = UapiServer.listen("wg0", newHost().host, { directory });
    await expect(second).rejects.toMatchObject({
      code: "EADDRINUSE",
      message: expect.stringMatching(/another daemon .* wg0/),
    });
    // The first one is untouched.
    const { text } = await exchange(server.path, "get=1\n\n", {
      until: (t) => countReplies(t) === 1,
    });
    expect(text).toBe(handleGet(host));
  });

  it("does not replace a file that is not a socket, nor accept a bad interface name", async () => {
    await writeFile(join(directory, "wg0.sock"), "not a socket");
    const { host } = newHost();
    await expect(UapiServer.listen("wg0", host, { directory })).rejects.toMatchObject({
      code: "EEXIST",
    });
    for (const name of ["", "..", "a/b", "sixteen-chars-xx", "wg 0"]) {
      await expect(UapiServer.listen(name, host, { directory })).rejects.toMatchObject({
        code: "ERR_UAPI_INTERFACE_NAME",
      });
    }
  });
});

// ---------------------------------------------------------------------------------------
// Debian's wg against the server

const run = promisify(execFile);
const hasWg = ["/usr/bin/wg", "/usr/sbin/wg", "/bin/wg", "/sbin/wg"].some((p) => existsSync(p));
const isRoot = process.getuid?.() === 0;

describe.skipIf(!hasWg || !isRoot)(
  "Debian's wg against an edgetun control socket (needs wg installed and root: wg only looks in /var/run/wireguard)",
  () => {
    let name: string;
    let scratch: string;
    let server: UapiServer | null = null;
    let host: FakeHost;
    let device: Device;
    let key: TestKey;

    const wg = async (...args: string[]): Promise<string> => (await run("wg", args)).stdout;

    beforeEach(async () => {
      name = `et${randomBytes(4).toString("hex")}`;
      scratch = await mkdtemp(join(tmpdir(), "edgetun-wg-"));
      ({ host, device, key } = newHost());
      server = await UapiServer.listen(name, host);
    });

    afterEach(async () => {
      await server?.close();
      server = null;
      await rm(scratch, { recursive: true, force: true });
      expect(existsSync(join(DEFAULT_UAPI_DIRECTORY, `${name}.sock`))).toBe(false);
    });

    async function keyFile(text: string): Promise<string> {
      const path = join(scratch, `key-${randomBytes(4).toString("hex")}`);
      await writeFile(path, `${text}\n`, { mode: 0o600 });
      return path;
    }

    it("wg show and wg show dump", async () => {
      const peer = newKey();
      device.addPeer({
        publicKey: peer.publicRaw,
        endpoint: { address: "192.0.2.1", port: 51821 },
        allowedIps: [parseCidr("10.0.0.2/32")],
      }).rxBytes = 2048;
      host.mark = 51;

      const show = await wg("show", name);
      expect(show).toContain(`interface: ${name}`);
      expect(show).toContain(`public key: ${key.publicBase64}`);
      expect(show).toContain("private key: (hidden)");
      expect(show).toContain("listening port: 51820");
      expect(show).toContain(`peer: ${peer.publicBase64}`);
      expect(show).toContain("endpoint: 192.0.2.1:51821");
      expect(show).toContain("allowed ips: 10.0.0.2/32");
      expect(show).toContain("transfer: 2.00 KiB received, 0 B sent");

      const dump = (await wg("show", name, "dump")).trimEnd().split("\n");
      expect(dump).toEqual([
        [key.base64, key.publicBase64, "51820", "0x33"].join("\t"),
        [
          peer.publicBase64,
          "(none)",
          "192.0.2.1:51821",
          "10.0.0.2/32",
          "0",
          "2048",
          "0",
          "off",
        ].join("\t"),
      ]);
      expect(await wg("show", "interfaces")).toContain(name);
    });

    it("wg set peer … allowed-ips … endpoint … persistent-keepalive, then remove", async () => {
      const peer = newKey();
      await wg(
        "set",
        name,
        "peer",
        peer.publicBase64,
        "allowed-ips",
        "10.2.0.0/16,fd00:2::/64",
        "endpoint",
        "[2001:db8::7]:51000",
        "persistent-keepalive",
        "25",
      );
      const created = device.peer(peer.publicRaw)!;
      expect(created.endpoint).toEqual({ address: "2001:db8::7", port: 51000 });
      expect(created.persistentKeepalive).toBe(25);
      expect(allowedIpsOf(device, peer.publicRaw)).toEqual(["10.2.0.0/16", "fd00:2::/64"]);

      const psk = encodeKey(randomBytes(32));
      await wg("set", name, "peer", peer.publicBase64, "preshared-key", await keyFile(psk));
      expect(encodeKey(created.presharedKey)).toBe(psk);

      const showconf = await wg("showconf", name);
      expect(showconf).toBe(
        [
          "[Interface]",
          "ListenPort = 51820",
          `PrivateKey = ${key.base64}`,
          "",
          "[Peer]",
          `PublicKey = ${peer.publicBase64}`,
          `PresharedKey = ${psk}`,
          "AllowedIPs = 10.2.0.0/16, fd00:2::/64",
          "Endpoint = [2001:db8::7]:51000",
          "PersistentKeepalive = 25",
          "",
        ].join("\n"),
      );

      await wg("set", name, "peer", peer.publicBase64, "remove");
      expect(device.peers.size).toBe(0);
      expect(device.allowedIps.size).toBe(0);
    });

    it("wg set private-key FILE listen-port N, and a port in use", async () => {
      const next = newKey();
      await wg("set", name, "private-key", await keyFile(next.base64), "listen-port", "51999");
      expect(device.publicKey).toEqual(next.publicRaw);
      expect(host.port).toBe(51999);
      expect(await wg("show", name, "public-key")).toBe(`${next.publicBase64}\n`);

      host.busyPort = 52000;
      await expect(wg("set", name, "listen-port", "52000")).rejects.toMatchObject({
        stderr: expect.stringContaining("Address already in use"),
      });
      expect(host.port).toBe(51999);

      // An empty key file removes the private key.
      await wg("set", name, "private-key", "/dev/null");
      expect(device.identity).toBeNull();
      expect(await wg("show", name, "private-key")).toBe("(none)\n");
    });

    it("wg syncconf FILE: removes, updates and adds peers to match the file", async () => {
      const [a, b, c] = [newKey(), newKey(), newKey()];
      device.addPeer({ publicKey: a.publicRaw, allowedIps: [parseCidr("10.0.1.0/24")] });
      const peerB = device.addPeer({
        publicKey: b.publicRaw,
        allowedIps: [parseCidr("10.0.2.0/24")],
        endpoint: { address: "192.0.2.2", port: 2 },
      });
      const next = newKey();
      const config = join(scratch, "wg.conf");
      await writeFile(
        config,
        [
          "[Interface]",
          `PrivateKey = ${next.base64}`,
          "ListenPort = 51830",
          "",
          "[Peer]",
          `PublicKey = ${b.publicBase64}`,
          "AllowedIPs = 10.0.22.0/24",
          "",
          "[Peer]",
          `PublicKey = ${c.publicBase64}`,
          "AllowedIPs = 10.0.3.0/24, fd00:3::/64",
          "Endpoint = 203.0.113.3:3333",
          "PersistentKeepalive = 15",
          "",
        ].join("\n"),
        { mode: 0o600 },
      );
      await wg("syncconf", name, config);

      expect(device.publicKey).toEqual(next.publicRaw);
      expect(host.port).toBe(51830);
      expect([...device.peers.keys()].sort()).toEqual([b.publicBase64, c.publicBase64].sort());
      // b is the same peer object (its sessions survive) with its allowed IPs replaced.
      expect(device.peer(b.publicRaw)).toBe(peerB);
      expect(allowedIpsOf(device, b.publicRaw)).toEqual(["10.0.22.0/24"]);
      expect(peerB.endpoint).toEqual({ address: "192.0.2.2", port: 2 });
      const peerC = device.peer(c.publicRaw)!;
      expect(allowedIpsOf(device, c.publicRaw)).toEqual(["10.0.3.0/24", "fd00:3::/64"]);
      expect(peerC.endpoint).toEqual({ address: "203.0.113.3", port: 3333 });
      expect(peerC.persistentKeepalive).toBe(15);

      // Syncing the same file again changes nothing.
      const before = handleGet(host);
      await wg("syncconf", name, config);
      expect(handleGet(host)).toBe(before);
    });
  },
);
