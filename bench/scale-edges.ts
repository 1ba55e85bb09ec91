// Simulated edges for bench/scale.ts: thousands of core Devices in one process, each an edge
// with its own key, its own loopback source address and port (as edges behind different NATs
// look to a hub), and the hub as its one peer. Driven over stdin/stdout by the bench:
//   stdout {"event":"ready"}           every edge has its initiation made and waits
//   stdin  "go"                        all initiations leave at once; then the protocol runs
//                                      (cookie replies, retransmissions) on each edge's timers
//   stdout {"event":"sessions",...}    every edge has a session, or the deadline passed; with
//                                      how many had one at the goal (8 s after "go")
//   stdin  "active"                    each edge sends one ICMP echo to the hub per second
//   stdin  "stop"                      exit
// Creating the initiations is each edge's own work, done in parallel by real edges: here it
// is done before "go" on a clock held still, so that every edge starts at the same instant.
// Run by bench/scale.ts inside the hub's namespace, never by hand.
import { createSocket, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { decodeKey } from "../src/core/keys.js";
import { Device, type Clock } from "../src/core/device.js";
import type { Endpoint } from "../src/core/endpoint.js";
import type { Peer } from "../src/core/peer.js";

export interface EdgeSimulatorInput {
  /** Base64 private keys of the edges. */
  privateKeys: string[];
  hubPublicKey: string;
  hubEndpoint: Endpoint;
  /** The hub's tunnel address, where the edges' packets go. */
  hubAddress: string;
  /** How long to wait for every session after "go". */
  deadlineMs: number;
}

/** The goal for a simultaneous start: every edge has a session this soon after "go". */
export const SESSIONS_GOAL_MS = 8_000;

/** Edge i's tunnel address (its /32 in the hub's AllowedIPs) and its loopback source address. */
export function edgeTunnelAddress(i: number): string {
  return `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}
export function edgeSourceAddress(i: number): string {
  return `127.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255 || 1}`;
}

const bytesOf = (address: string) => Uint8Array.from(address.split(".").map(Number));

function checksum(bytes: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4 ICMP echo request from `source` to `destination`, checksums right. */
function echoRequest(source: string, destination: string, id: number, sequence: number): Buffer {
  const packet = Buffer.alloc(20 + 8 + 32);
  packet[0] = 0x45;
  packet.writeUInt16BE(packet.length, 2);
  packet[8] = 64;
  packet[9] = 1; // ICMP
  packet.set(bytesOf(source), 12);
  packet.set(bytesOf(destination), 16);
  packet.writeUInt16BE(checksum(packet, 0, 20), 10);
  packet[20] = 8; // echo request
  packet.writeUInt16BE(id & 0xffff, 24);
  packet.writeUInt16BE(sequence & 0xffff, 26);
  packet.writeUInt16BE(checksum(packet, 20, packet.length), 22);
  return packet;
}

/** Monotonic time that stands still until started: every edge's timers begin together. */
class HeldClock implements Clock {
  #startedAt: number | null = null;
  constructor(private readonly origin = performance.now()) {}
  start(): void {
    this.#startedAt = performance.now();
  }
  now(): number {
    return this.#startedAt === null
      ? this.origin
      : this.origin + (performance.now() - this.#startedAt);
  }
  wallClockMs(): number {
    return Date.now();
  }
}

interface Edge {
  device: Device;
  hub: Peer;
  socket: Socket;
  address: string;
}

function send(edge: Edge): void {
  const actions = edge.device.actions;
  actions.datagrams.forEach((datagram, i) => {
    const to = actions.endpoints[i]!;
    edge.socket.send(datagram, to.port, to.address);
  });
  actions.clear();
}

const print = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(event)}\n`);

async function main(): Promise<void> {
  const input = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as EdgeSimulatorInput;
  const clock = new HeldClock();
  const hubKey = decodeKey(input.hubPublicKey);
  const edges: Edge[] = [];
  for (const [i, privateKey] of input.privateKeys.entries()) {
    const device = new Device({ privateKey: decodeKey(privateKey), clock });
    const hub = device.addPeer({
      publicKey: hubKey,
      endpoint: input.hubEndpoint,
      allowedIps: [{ address: new Uint8Array(4), cidr: 0 }],
    });
    const socket = createSocket("udp4");
    const address = edgeSourceAddress(i);
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, address, () => resolve());
    });
    const edge: Edge = { device, hub, socket, address: edgeTunnelAddress(i) };
    socket.on("message", (message, from) => {
      device.handleDatagram(message, { address: from.address, port: from.port });
      device.actions.tunnelPackets.length = 0;
      send(edge);
    });
    // The first packet waits for a session and makes the initiation now; it leaves at "go".
    device.handleTunnelPacket(echoRequest(edge.address, input.hubAddress, i, 0));
    edges.push(edge);
  }
  print({ event: "ready", edges: edges.length });

  let sequence = 1;
  let activity: NodeJS.Timeout | null = null;
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === "go") {
      clock.start();
      const start = performance.now();
      for (const edge of edges) send(edge);
      const ticker = setInterval(() => {
        for (const edge of edges) {
          edge.device.tick();
          send(edge);
        }
      }, 100);
      let withSession: number;
      let atGoal: number | null = null;
      for (;;) {
        const elapsed = performance.now() - start;
        withSession = edges.filter((edge) => edge.hub.handshakesCompleted > 0).length;
        if (atGoal === null && (elapsed >= SESSIONS_GOAL_MS || withSession === edges.length)) {
          atGoal = withSession;
        }
        if (withSession === edges.length || elapsed >= input.deadlineMs) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const totals = { initiationsSent: 0, responses: 0, cookieReplies: 0, drops: 0 };
      for (const { device } of edges) {
        totals.initiationsSent += device.stats.handshakeInitiationsSent;
        totals.responses += device.stats.handshakeResponsesReceived;
        totals.cookieReplies += device.stats.cookieRepliesReceived;
        totals.drops += device.stats.totalDrops;
      }
      print({
        event: "sessions",
        ms: performance.now() - start,
        withSession,
        atGoal,
        edges: edges.length,
        ...totals,
      });
      void ticker;
    } else if (line === "active" && activity === null) {
      // One echo per edge per second, in 50 slices of the second so the load is even.
      const slices = 50;
      let slice = 0;
      activity = setInterval(() => {
        for (let i = slice; i < edges.length; i += slices) {
          const edge = edges[i]!;
          edge.device.handleTunnelPacket(echoRequest(edge.address, input.hubAddress, i, sequence));
          edge.device.actions.tunnelPackets.length = 0;
          send(edge);
        }
        slice = (slice + 1) % slices;
        if (slice === 0) sequence++;
      }, 1000 / slices);
    } else if (line === "stop") {
      process.exit(0);
    }
  }
}

// bench/scale.ts imports the helpers above; only running this file starts the simulator.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
