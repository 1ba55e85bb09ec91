// The test peer (fixtures/udp-peer.ts, a core Device on a plain UDP socket) as a process the
// integration tests drive inside one of their namespaces: commands as JSON lines on its stdin,
// its events (ready, echo-request, echo-reply, replayed, roamed, stats, …) kept as they arrive.
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Config } from "./fixtures/udp-peer.js";
import { waitFor, type Testbed } from "./netns.js";

export type { Config as UdpPeerConfig };

/** The fixture as built (`npm run build`); the tests skip when it is not there. */
export const UDP_PEER_FIXTURE = new URL(
  "../../dist/test/support/fixtures/udp-peer.js",
  import.meta.url,
).pathname;

export interface PeerEvent {
  event: string;
  [key: string]: unknown;
}

export class UdpPeer {
  readonly events: PeerEvent[] = [];

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      this.events.push(JSON.parse(line) as PeerEvent);
    });
  }

  /** Starts the fixture in `ns` with `config`; `ready()` waits until it listens. */
  static spawn(bed: Testbed, ns: string, config: Config): UdpPeer {
    return new UdpPeer(bed.spawn(ns, process.execPath, [UDP_PEER_FIXTURE, JSON.stringify(config)]));
  }

  async ready(): Promise<void> {
    await waitFor("the test peer to start", () => this.has((e) => e.event === "ready"));
  }

  command(command: object): void {
    this.child.stdin!.write(`${JSON.stringify(command)}\n`);
  }

  has(predicate: (e: PeerEvent) => boolean): boolean {
    return this.events.some(predicate);
  }

  count(predicate: (e: PeerEvent) => boolean): number {
    return this.events.filter(predicate).length;
  }

  /** The first `event` after the first `after` events, once it has come. */
  async next(event: string, after: number): Promise<PeerEvent> {
    await waitFor(`the peer's ${event}`, () =>
      this.events.slice(after).some((e) => e.event === event),
    );
    return this.events.slice(after).find((e) => e.event === event)!;
  }
}
