// The daemon and its handshake lane (native/lane.c) over loopback, at rest: a lane with
// nothing to do is not polled (issue 14: polling it every 250 ms was most of an idle daemon's
// CPU), yet what it settles after a quiet spell still reaches the device's counters, because
// the lane wakes the daemon at its next datagram.
import { createSocket, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";
import { afterEach, describe, it } from "vitest";
import { generatePrivateKey } from "../../src/core/keys.js";
import { MessageType } from "../../src/core/messages.js";
import { parseConfig } from "../../src/host/config.js";
import { Daemon } from "../../src/host/daemon.js";
import { createLogger } from "../../src/host/log.js";
import { UdpSocketPair, nativeLoadError } from "../../src/host/native/index.js";
import { FakeTun } from "../support/fake-io.js";
import { waitFor } from "../support/netns.js";

const addonMissing = nativeLoadError();
const skipReason = addonMissing ? `needs the native addon (${addonMissing.message})` : null;
if (skipReason) console.warn(`handshake lane daemon tests skipped: ${skipReason}`);

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe.skipIf(skipReason !== null)("the daemon's handshake lane at rest", () => {
  it("counts what a quiet lane drops, told by the lane rather than by polling", async () => {
    let steered = false;
    const daemon = await Daemon.startDataPath({
      tun: new FakeTun(),
      openSocket: (port) => {
        const pair = UdpSocketPair.open({ host: "127.0.0.1", port });
        steered = pair.handshake !== null && pair.handshake !== undefined;
        return pair;
      },
      config: parseConfig(`[Interface]\nPrivateKey = ${generatePrivateKey()}\n`, "lane.conf"),
      logger: createLogger({ level: "error", write: () => {} }),
    });
    cleanups.push(() => daemon.stop());
    if (!steered) return; // no steering in this kernel: no lane, the daemon reads the socket
    const sender: Socket = createSocket("udp4");
    cleanups.push(() => void sender.close());
    await new Promise<void>((resolve) => sender.bind(0, "127.0.0.1", resolve));
    const junk = randomBytes(148);
    junk.writeUInt32LE(MessageType.HandshakeInitiation, 0); // a bad mac1

    // Quiet for several of the busy lane's sync intervals: the daemon stopped looking.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    for (let i = 0; i < 3; i++) sender.send(junk, daemon.listenPort(), "127.0.0.1");
    await waitFor("the drops counted", () => daemon.device.stats.drops.bad_mac1 === 3, 5_000);

    // Again after another quiet spell: the lane asks to be looked at each time.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    sender.send(junk, daemon.listenPort(), "127.0.0.1");
    await waitFor("the next drop counted", () => daemon.device.stats.drops.bad_mac1 === 4, 5_000);
  });
});
