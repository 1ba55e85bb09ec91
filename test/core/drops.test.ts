import { describe, expect, it } from "vitest";
import { DeviceStats } from "../../src/core/device.js";
import {
  DROP_REASONS,
  DROP_REASON_TABLE,
  HANDSHAKE_FAILURE_REASONS,
  isDropReason,
} from "../../src/core/drops.js";

describe("the drop reason table", () => {
  it("gives the device a counter for every reason and no other", () => {
    const stats = new DeviceStats();
    expect(Object.keys(stats.drops)).toEqual([...DROP_REASONS]);
    stats.drops.replayed += 2;
    stats.drops.queue_full += 1;
    expect(stats.totalDrops).toBe(3);
  });

  it("marks the refused handshakes and the local shortages", () => {
    expect([...HANDSHAKE_FAILURE_REASONS].sort()).toEqual(
      [
        "bad_mac1",
        "rate_limited",
        "handshake_decryption_failed",
        "unknown_peer",
        "handshake_replay",
        "handshake_flood",
        "unexpected_handshake",
        "bad_cookie_reply",
        "handshake_queue_full",
        "handshake_stale",
        "handshake_over_share",
      ].sort(),
    );
    const local = DROP_REASONS.filter((reason) => DROP_REASON_TABLE[reason].origin === "local");
    expect(local).toEqual([
      "queue_full",
      "handshake_queue_full",
      "handshake_stale",
      "handshake_over_share",
      "handshake_abandoned",
      "slow_path_full",
    ]);
    for (const reason of DROP_REASONS) expect(DROP_REASON_TABLE[reason].meaning).not.toBe("");
  });

  it("knows its own names only", () => {
    expect(isDropReason("replayed")).toBe(true);
    expect(isDropReason("toString")).toBe(false);
    expect(isDropReason("")).toBe(false);
  });
});
