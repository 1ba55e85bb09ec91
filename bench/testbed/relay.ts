// A UDP delay relay: the testbed's stand-in for netem (not available here). It runs in the
// router namespace; each edge's tunnel sends to its own relay socket instead of the hub, and
// the relay forwards every datagram to the hub from a socket of that edge's own (so the hub
// still sees one endpoint per edge), and the hub's replies back to the edge. Each datagram is
// held `delayMs` before it goes on, in both directions: an edge↔hub round trip gains 2 × delay.
// The queues are bounded (FIFO; a constant delay keeps the order); a datagram arriving at a
// full queue is dropped and counted.
//
//   node relay.js '{"delayMs":50,"hub":"10.77.0.2:51820","hubBind":"10.77.0.1",
//                   "listen":["10.77.1.1:51900",...],"queueLimit":16384}'
//
// Prints "ready" once every socket is bound; on SIGTERM prints one JSON line of counters.
import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";

export interface RelayOptions {
  delayMs: number;
  hub: string;
  hubBind: string;
  listen: string[];
  queueLimit: number;
}

interface Held {
  due: number;
  data: Buffer;
}

/** Datagrams on their way in one direction, released in order once their time has come. */
class DelayLine {
  private readonly items: Held[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | null = null;
  forwarded = 0;
  dropped = 0;

  constructor(
    private readonly delayMs: number,
    private readonly limit: number,
    private readonly send: (data: Buffer) => void,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  push(data: Buffer): void {
    if (this.length >= this.limit) {
      this.dropped++;
      return;
    }
    this.items.push({ due: performance.now() + this.delayMs, data });
    if (!this.timer) this.arm();
  }

  private arm(): void {
    const next = this.items[this.head];
    if (!next) {
      this.timer = null;
      return;
    }
    this.timer = setTimeout(() => this.release(), Math.max(0, next.due - performance.now()));
  }

  private release(): void {
    const now = performance.now();
    while (this.head < this.items.length) {
      const item = this.items[this.head]!;
      if (item.due > now + 0.5) break;
      this.items[this.head] = undefined as unknown as Held;
      this.head++;
      this.send(item.data);
      this.forwarded++;
    }
    // Compact now and then, so the array does not grow without bound.
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    this.arm();
  }
}

function hostPort(text: string): { address: string; port: number } {
  const at = text.lastIndexOf(":");
  return { address: text.slice(0, at), port: Number(text.slice(at + 1)) };
}

function bind(socket: Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind({ address, port, exclusive: true }, () => {
      socket.off("error", reject);
      resolve();
    });
  });
}

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? "{}") as RelayOptions;
  const hub = hostPort(options.hub);
  const lines: DelayLine[] = [];
  let sendErrors = 0;
  const onSendError = (error: Error | null) => {
    if (error) sendErrors++;
  };
  for (const listen of options.listen) {
    const edgeSide = createSocket({
      type: "udp4",
      recvBufferSize: 8 << 20,
      sendBufferSize: 8 << 20,
    });
    const hubSide = createSocket({
      type: "udp4",
      recvBufferSize: 8 << 20,
      sendBufferSize: 8 << 20,
    });
    const at = hostPort(listen);
    await bind(edgeSide, at.address, at.port);
    await bind(hubSide, options.hubBind, 0);
    let edge: { address: string; port: number } | null = null;
    const toHub = new DelayLine(options.delayMs, options.queueLimit, (data) =>
      hubSide.send(data, hub.port, hub.address, onSendError),
    );
    const toEdge = new DelayLine(options.delayMs, options.queueLimit, (data) => {
      if (edge) edgeSide.send(data, edge.port, edge.address, onSendError);
    });
    lines.push(toHub, toEdge);
    edgeSide.on("message", (data, remote) => {
      edge = { address: remote.address, port: remote.port };
      toHub.push(data);
    });
    hubSide.on("message", (data, remote) => {
      if (remote.address === hub.address && remote.port === hub.port) toEdge.push(data);
    });
  }
  const report = () => {
    const forwarded = lines.reduce((sum, line) => sum + line.forwarded, 0);
    const dropped = lines.reduce((sum, line) => sum + line.dropped, 0);
    process.stdout.write(`${JSON.stringify({ forwarded, dropped, sendErrors })}\n`, () =>
      process.exit(0),
    );
  };
  process.on("SIGTERM", report);
  process.on("SIGINT", report);
  process.stdout.write("ready\n");
}

main().catch((error: unknown) => {
  process.stderr.write(`relay: ${(error as Error).message}\n`);
  process.exit(1);
});
