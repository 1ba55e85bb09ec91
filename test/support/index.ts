// Test support: a controllable clock, seeded randomness, and an in-memory network of devices.
import { createHash } from "node:crypto";
import type { RandomSource } from "../../src/core/crypto.js";
import { PrivateKey } from "../../src/core/crypto.js";
import { Device, type Clock } from "../../src/core/device.js";
import { parseCidr } from "../../src/core/ipaddr.js";
import type { Endpoint } from "../../src/core/endpoint.js";

export class FakeClock implements Clock {
  constructor(
    public monotonicMs = 1_000_000,
    public wallMs = Date.UTC(2026, 0, 1),
  ) {}
  now(): number {
    return this.monotonicMs;
  }
  wallClockMs(): number {
    return this.wallMs;
  }
  advance(ms: number): void {
    this.monotonicMs += ms;
    this.wallMs += ms;
  }
}

/** Deterministic bytes from a seed (SHA-256 in counter mode): reproducible handshakes. */
export function seededRandom(seed: string): RandomSource {
  let counter = 0;
  let pool = Buffer.alloc(0);
  return {
    fill(target) {
      let offset = 0;
      while (offset < target.length) {
        if (pool.length === 0) {
          pool = createHash("sha256").update(`${seed}:${counter++}`).digest();
        }
        const take = Math.min(pool.length, target.length - offset);
        target.set(pool.subarray(0, take), offset);
        pool = pool.subarray(take);
        offset += take;
      }
    },
  };
}

/** xorshift32: reproducible numbers in [0, 1), so a failing randomized test names its seed. */
export function seededNumbers(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

export function keyFromSeed(seed: string): PrivateKey {
  const raw = Buffer.alloc(32);
  seededRandom(`key:${seed}`).fill(raw);
  return new PrivateKey(raw);
}

export function cidr(text: string): { address: Uint8Array; cidr: number } {
  return parseCidr(text);
}

/** A minimal IPv4 packet (header + payload) from src to dst. */
export function ipv4Packet(src: string, dst: string, payload: Uint8Array | string): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
  const packet = Buffer.alloc(20 + body.length);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 17;
  Buffer.from(parseCidr(src).address).copy(packet, 12);
  Buffer.from(parseCidr(dst).address).copy(packet, 16);
  body.copy(packet, 20);
  return packet;
}

/** A minimal IPv6 packet from src to dst. */
export function ipv6Packet(src: string, dst: string, payload: Uint8Array | string): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
  const packet = Buffer.alloc(40 + body.length);
  packet[0] = 0x60;
  packet.writeUInt16BE(body.length, 4);
  packet[6] = 17;
  packet[7] = 64;
  Buffer.from(parseCidr(src).address).copy(packet, 8);
  Buffer.from(parseCidr(dst).address).copy(packet, 24);
  body.copy(packet, 40);
  return packet;
}

export interface Node {
  name: string;
  device: Device;
  endpoint: Endpoint;
  key: PrivateKey;
  /** Inner packets this node's device handed to its tunnel. */
  delivered: Buffer[];
}

/**
 * Devices joined by a lossless in-memory network. Datagrams are delivered when `run()` is
 * called, in order, until nothing more is in flight; a filter can drop or inspect them.
 */
export class Network {
  readonly nodes = new Map<string, Node>();
  readonly clock = new FakeClock();
  /** Every datagram carried: (from, to, bytes). */
  readonly log: Array<{ from: string; to: string; datagram: Buffer }> = [];
  filter: (from: string, to: string, datagram: Buffer) => boolean = () => true;
  private readonly queue: Array<{ from: string; to: Endpoint; datagram: Buffer }> = [];

  addNode(
    name: string,
    index: number,
    options: { underLoadHandshakesPerSecond?: number } = {},
  ): Node {
    const key = keyFromSeed(name);
    const device = new Device({
      clock: this.clock,
      random: seededRandom(`device:${name}`),
      privateKey: key.raw,
      ...options,
    });
    const node: Node = {
      name,
      device,
      endpoint: { address: `192.0.2.${index}`, port: 51820 },
      key,
      delivered: [],
    };
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): Node {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  /** Moves each device's pending actions onto the wire or into its delivered list. */
  collect(): void {
    for (const node of this.nodes.values()) {
      const actions = node.device.actions;
      actions.datagrams.forEach((datagram, i) => {
        this.queue.push({ from: node.name, to: actions.endpoints[i]!, datagram });
      });
      for (const packet of actions.tunnelPackets) node.delivered.push(Buffer.from(packet));
      actions.clear();
    }
  }

  run(maxSteps = 10_000): void {
    this.collect();
    let steps = 0;
    while (this.queue.length > 0) {
      if (++steps > maxSteps) throw new Error("network did not settle");
      const { from, to, datagram } = this.queue.shift()!;
      const target = [...this.nodes.values()].find(
        (n) => n.endpoint.address === to.address && n.endpoint.port === to.port,
      );
      if (!target) continue;
      this.log.push({ from, to: target.name, datagram });
      if (!this.filter(from, target.name, datagram)) continue;
      target.device.handleDatagram(datagram, this.node(from).endpoint);
      this.collect();
    }
  }

  /** Advances time in steps, ticking every device and delivering what the timers send. */
  advance(ms: number, stepMs = 50): void {
    for (let elapsed = 0; elapsed < ms; elapsed += stepMs) {
      this.clock.advance(Math.min(stepMs, ms - elapsed));
      for (const node of this.nodes.values()) node.device.tick();
      this.run();
    }
  }

  send(from: string, packet: Buffer): void {
    this.node(from).device.handleTunnelPacket(packet);
    this.run();
  }
}

/**
 * Two nodes configured as each other's peer: a (10.0.0.1) and b (10.0.0.2). `underLoad` sets
 * b's threshold of handshakes per second (0: b is always under load).
 */
export function pairOfNodes(
  options: { psk?: boolean; bKnowsA?: boolean; underLoad?: number } = {},
): { net: Network; a: Node; b: Node } {
  const net = new Network();
  const load =
    options.underLoad !== undefined ? { underLoadHandshakesPerSecond: options.underLoad } : {};
  const a = net.addNode("a", 1);
  const b = net.addNode("b", 2, load);
  const psk = options.psk ? Buffer.alloc(32, 7) : undefined;
  a.device.addPeer({
    publicKey: b.key.publicKey,
    endpoint: b.endpoint,
    allowedIps: [cidr("10.0.0.2/32"), cidr("fd00::2/128")],
    ...(psk ? { presharedKey: psk } : {}),
  });
  b.device.addPeer({
    publicKey: a.key.publicKey,
    endpoint: options.bKnowsA === false ? null : a.endpoint,
    allowedIps: [cidr("10.0.0.1/32"), cidr("fd00::1/128")],
    ...(psk ? { presharedKey: psk } : {}),
  });
  return { net, a, b };
}
