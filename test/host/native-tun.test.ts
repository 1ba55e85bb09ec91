// TUN device tests. They need root: the test creates a network namespace with a unique name,
// runs test/native-tun-helper.mjs inside it (`ip netns exec`, since this process cannot enter
// a namespace itself) and always deletes the namespace afterwards. Nothing leaves it.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tunUnavailableReason } from "../support/netns.js";
import { transpileNativeModule } from "../support/transpile-native.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const addonPath = join(repoRoot, "build", "Release", "edgetun.node");
const helperPath = join(repoRoot, "test", "support", "native-tun-helper.mjs");

const skipReason = tunUnavailableReason();
if (skipReason) {
  console.warn(`native TUN tests skipped: ${skipReason}`);
}

interface HelperResult {
  name: string;
  mtu: number;
  busy: { code: string; message: string } | null;
  mismatch: { code: string; message: string } | null;
  autoName: string;
  queueNames: string[];
  queueFds: number;
  reads: number[];
  fromTun: Array<{
    source: string;
    destination: string;
    sourcePort: number;
    destinationPort: number;
    payload: string;
  }>;
  written: number;
  writeStatus: number[];
  expectedArrivals: string[];
  arrived: Array<{ payload: string; address: string; port: number }>;
  closedTwice: unknown;
}

describe.skipIf(skipReason !== null)(
  `TUN device in a private network namespace${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    const namespace = `edgetun-test-${process.pid}-${randomBytes(3).toString("hex")}`;
    let scratch = "";
    let setupError: string | undefined;
    let result: HelperResult | undefined;
    let helperOutput = "";

    beforeAll(() => {
      scratch = mkdtempSync(join(tmpdir(), "edgetun-tun-test-"));
      const nativeModule = transpileNativeModule(scratch);
      const add = spawnSync("ip", ["netns", "add", namespace], { encoding: "utf8" });
      if (add.status !== 0) {
        setupError = `ip netns add failed: ${add.stderr.trim()}`;
        return;
      }
      const run = spawnSync(
        "ip",
        ["netns", "exec", namespace, process.execPath, helperPath, nativeModule],
        {
          encoding: "utf8",
          timeout: 20_000,
          env: { ...process.env, EDGETUN_ADDON: addonPath },
        },
      );
      helperOutput = `status ${run.status} signal ${run.signal}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`;
      if (run.status === 0) {
        result = JSON.parse(run.stdout) as HelperResult;
      }
    }, 30_000);

    afterAll(() => {
      // Always remove the namespace, even when the helper failed or hung.
      spawnSync("ip", ["netns", "del", namespace]);
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    });

    function helper(): HelperResult {
      if (setupError) throw new Error(setupError);
      if (!result) throw new Error(`helper failed or did not exit:\n${helperOutput}`);
      return result;
    }

    it("opens a named device, sets its MTU and exits cleanly after close()", () => {
      const r = helper();
      expect(r.name).toBe("etun0");
      expect(r.mtu).toBe(1400);
      expect(r.closedTwice).toBeNull();
    });

    it("lets the kernel pick a name and attaches several queues to one device", () => {
      const r = helper();
      expect(r.autoName).toMatch(/^tun\d+$/);
      expect(r.queueNames).toEqual(["etunmq", "etunmq", "etunmq"]);
      expect(r.queueFds).toBe(3);
    });

    it("reports a name in use and a multi-queue mismatch", () => {
      const r = helper();
      expect(r.busy).toMatchObject({
        code: "EBUSY",
        message: "EBUSY: interface name in use: 'etun0'",
      });
      expect(r.mismatch?.code).toBe("EINVAL");
      expect(r.mismatch?.message).toMatch(/multi-queue must match/);
    });

    it("reads datagrams sent into the tunnel subnet as IPv4 packets, in a batch", () => {
      const r = helper();
      const ours = r.fromTun.map((packet) => packet.payload);
      expect(ours).toEqual(Array.from({ length: 8 }, (_, i) => `to the tunnel ${i}`));
      for (const packet of r.fromTun) {
        expect(packet).toMatchObject({ source: "10.77.0.1", destination: "10.77.0.2" });
      }
      // All eight were queued before the first readiness callback: one call returned them.
      expect(Math.max(...r.reads)).toBeGreaterThanOrEqual(8);
    });

    it("writes a batch of packets that sockets receive; a malformed one fails alone", () => {
      const r = helper();
      expect(r.written).toBe(6);
      expect(r.writeStatus).toEqual([0, 0, 0, -22, 0, 0]); // EINVAL for the bad version nibble
      expect(r.arrived.map((entry) => entry.payload)).toEqual(r.expectedArrivals);
      for (const entry of r.arrived) {
        expect(entry).toMatchObject({ address: "10.77.0.2", port: 4000 });
      }
    });
  },
);
