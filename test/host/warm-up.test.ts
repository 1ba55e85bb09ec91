// The data-path warm-up (src/host/warm-up.ts): two throwaway daemons in memory do a real
// handshake and trade packets both ways, then stop; an abort ends it early.
import { describe, expect, it } from "vitest";
import { Daemon } from "../../src/host/daemon.js";
import { nativeLoadError } from "../../src/host/native/index.js";
import { SliceScheduler, warmUpDataPath } from "../../src/host/warm-up.js";

const addonMissing = nativeLoadError();
const skipReason = addonMissing ? `needs the native addon (${addonMissing.message})` : null;
if (skipReason) console.warn(`warm-up tests skipped: ${skipReason}`);

describe("the warm-up's scheduler", () => {
  it("runs queued work in slices with an event-loop turn between them", async () => {
    const scheduler = new SliceScheduler(1);
    let ran = 0;
    // 50 tasks of 0.2 ms: 10 ms of work, so more than one 1 ms slice whatever the load.
    const busy = () => {
      const end = performance.now() + 0.2;
      while (performance.now() < end);
      ran++;
    };
    for (let i = 0; i < 50; i++) scheduler.post(busy);
    let ranBeforeOutsideWork = -1;
    setImmediate(() => (ranBeforeOutsideWork = ran));
    // Wait for all of it however slow the machine: only the order is asserted.
    while (ran < 50) await new Promise((resolve) => setTimeout(resolve, 20));
    // Something else (a real packet) got its turn after the first slice, not after all.
    expect(ranBeforeOutsideWork).toBeGreaterThan(0);
    expect(ranBeforeOutsideWork).toBeLessThan(50);
  });
});

describe.skipIf(skipReason !== null)("data-path warm-up", () => {
  it("completes its round trips through a real handshake and stops both daemons", async () => {
    const started: Daemon[] = [];
    const starter = {
      startDataPath: async (options: Parameters<typeof Daemon.startDataPath>[0]) => {
        const daemon = await Daemon.startDataPath(options);
        started.push(daemon);
        return daemon;
      },
    };
    expect(await warmUpDataPath(starter, { roundTrips: 300 })).toBe(300);
    expect(started).toHaveLength(2);
    for (const daemon of started) {
      // One handshake, then every packet sealed and opened on its session; all stopped.
      const peer = [...daemon.device.peers.values()][0]!;
      expect(peer.handshakesCompleted).toBe(1);
      expect(peer.rxBytes).toBeGreaterThan(300 * 84);
      expect(peer.txBytes).toBeGreaterThan(300 * 84);
      expect(daemon.device.stats.totalDrops).toBe(0);
      expect(daemon.isUp).toBe(false);
    }
  }, 30_000);

  it("ends early when aborted", async () => {
    const abort = new AbortController();
    const warming = warmUpDataPath(Daemon, { roundTrips: 1_000_000, signal: abort.signal });
    setTimeout(() => abort.abort(), 200);
    const completed = await warming;
    expect(completed).toBeLessThan(1_000_000);
  }, 30_000);
});
