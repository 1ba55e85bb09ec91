// Errors a user meets: each message names the errno and says what to do, `code` is set, and
// a bad call from JS is a TypeError/RangeError rather than a crash.
import { spawnSync } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ENDPOINT_SIZE,
  PacketBatch,
  TunDevice,
  UdpBatchSocket,
  getLinkMtu,
  nativeAvailable,
  openBatch,
  sealBatch,
  setLinkMtu,
  setLinkUp,
  writeEndpoint,
} from "../../src/host/native/index.js";

const addonPath = fileURLToPath(new URL("../../build/Release/edgetun.node", import.meta.url));

function thrown(fn: () => unknown): Error & { code?: string; errno?: number } {
  try {
    fn();
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error("expected an exception");
}

describe("interface names", () => {
  it("refuses a name longer than 15 bytes before touching the kernel", () => {
    const error = thrown(() => TunDevice.open({ name: "edgetun-much-too-long" }));
    expect(error).toBeInstanceOf(RangeError);
    expect(error.code).toBe("ENAMETOOLONG");
    expect(error.message).toBe(
      "ENAMETOOLONG: interface name too long (max 15): 'edgetun-much-too-long'",
    );
    expect(() => setLinkMtu("x".repeat(16), 1420)).toThrow(/interface name too long \(max 15\)/);
    expect(() => TunDevice.open({ name: "a".repeat(15) + "é" })).toThrow(RangeError);
  });

  it("refuses names the kernel would reject with a bare EINVAL", () => {
    for (const name of ["a/b", "eth:0", "has space", ".."]) {
      const error = thrown(() => TunDevice.open({ name }));
      expect(error).toBeInstanceOf(RangeError);
      expect(error.code).toBe("EINVAL");
    }
    expect(() => setLinkUp("", true)).toThrow(/must not be empty/);
  });

  it("names a missing interface", () => {
    const error = thrown(() => getLinkMtu("edgetun-nx0"));
    expect(error.code).toBe("ENODEV");
    expect(error.message).toBe("ENODEV: no interface named 'edgetun-nx0'");
  });

  it("checks the MTU range and argument types", () => {
    expect(() => setLinkMtu("lo", 10)).toThrow(RangeError);
    expect(() => setLinkMtu("lo", 1e6)).toThrow(RangeError);
    expect(() => setLinkMtu(42 as unknown as string, 1420)).toThrow(TypeError);
    expect(() => TunDevice.open({ name: "x", multiQueue: "yes" as unknown as boolean })).toThrow(
      TypeError,
    );
  });
});

describe.skipIf(process.getuid?.() !== 0)(
  "without CAP_NET_ADMIN (root only: drops to nobody)",
  () => {
    it("explains that creating a TUN device needs CAP_NET_ADMIN", () => {
      const script = `
      const a = require(${JSON.stringify(addonPath)});
      try { a.tunOpen("edgetun-perm", false); console.log("opened"); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }
    `;
      const child = spawnSync(process.execPath, ["-e", script], {
        uid: 65534,
        gid: 65534,
        encoding: "utf8",
        timeout: 10_000,
      });
      expect(child.status, child.stderr).toBe(0);
      const error = JSON.parse(child.stdout) as { code: string; message: string };
      expect(["EPERM", "EACCES"]).toContain(error.code);
      expect(error.message).toMatch(/^(EPERM|EACCES): CAP_NET_ADMIN required to create TUN device/);
    });
  },
);

describe("descriptors", () => {
  const raw = createRequire(import.meta.url)(addonPath) as {
    close(fd: number): void;
    tunRead(...args: unknown[]): number;
  };

  it("never closes a descriptor the addon did not open", () => {
    const error = thrown(() => raw.close(0));
    expect(error.code).toBe("EBADF");
  });

  it("refuses a UDP socket where a TUN device is expected", () => {
    const socket = UdpBatchSocket.open({ host: "127.0.0.1" });
    try {
      const batch = new PacketBatch(1);
      const error = thrown(() =>
        raw.tunRead(socket.fd, batch.arena, batch.offsets, batch.lengths, 0, 1, batch.room),
      );
      expect(error.code).toBe("EBADF");
      expect(error.message).toMatch(/is not an open TUN device/);
    } finally {
      socket.close();
    }
  });

  it("rejects wrong argument counts and types at the native boundary", () => {
    expect(() => (raw.close as () => void)()).toThrow(TypeError);
    expect(() => raw.close(-1)).toThrow(RangeError);
    expect(() => raw.close("3" as unknown as number)).toThrow(TypeError);
  });
});

describe("out-of-range batches never write outside the arena", () => {
  const GUARD = 64;
  const ARENA = 512;

  /** An arena with guard bytes on both sides, inside one allocation. */
  function guarded(): { whole: Buffer; arena: Buffer; intact: () => boolean } {
    const whole = Buffer.alloc(GUARD + ARENA + GUARD, 0xee);
    const arena = whole.subarray(GUARD, GUARD + ARENA);
    const intact = () =>
      whole.subarray(0, GUARD).every((b) => b === 0xee) &&
      whole.subarray(GUARD + ARENA).every((b) => b === 0xee);
    return { whole, arena, intact };
  }

  const packets = fc.array(
    fc.record({
      offset: fc.integer({ min: 0, max: ARENA + 40 }),
      length: fc.integer({ min: 0, max: ARENA + 40 }),
    }),
    { minLength: 1, maxLength: 8 },
  );

  it("AEAD: any offsets and lengths either work in bounds or throw RangeError", () => {
    const key = Buffer.alloc(32, 9);
    fc.assert(
      fc.property(packets, fc.boolean(), (list, sealing) => {
        const { arena, intact } = guarded();
        const slots = {
          arena,
          offsets: Uint32Array.from(list.map((p) => p.offset)),
          lengths: Uint32Array.from(list.map((p) => p.length)),
          keySlots: new Uint32Array(list.length),
          counters: new BigUint64Array(list.length),
        };
        try {
          if (sealing) sealBatch(slots, key, list.length);
          else openBatch(slots, key, list.length);
        } catch (error) {
          expect(error).toBeInstanceOf(RangeError);
        }
        expect(intact()).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it("UDP receive: any room and offsets either work in bounds or throw RangeError", async () => {
    const receiver = UdpBatchSocket.open({ host: "127.0.0.1" });
    const sender = UdpBatchSocket.open({ host: "127.0.0.1" });
    try {
      const out = new PacketBatch(1, { slotSize: 1024 });
      out.setPacket(0, Buffer.alloc(600, 0x77));
      const endpoint = new Uint8Array(ENDPOINT_SIZE);
      writeEndpoint(endpoint, 0, { address: "127.0.0.1", port: receiver.port });
      await fc.assert(
        fc.asyncProperty(packets, fc.integer({ min: 1, max: ARENA + 40 }), async (list, room) => {
          sender.sendBatch({ ...out, endpoints: endpoint }, 1);
          await new Promise((resolve) => setTimeout(resolve, 1));
          const { arena, intact } = guarded();
          const slots = {
            arena,
            room,
            offsets: Uint32Array.from(list.map((p) => p.offset)),
            lengths: new Uint32Array(list.length),
            endpoints: new Uint8Array(list.length * ENDPOINT_SIZE),
          };
          try {
            receiver.recvBatch(slots);
          } catch (error) {
            expect(error).toBeInstanceOf(RangeError);
          }
          expect(intact()).toBe(true);
        }),
        { numRuns: 100 },
      );
    } finally {
      receiver.close();
      sender.close();
    }
  });
});

describe("loading the addon", () => {
  const saved = process.env["EDGETUN_ADDON"];
  afterEach(() => {
    if (saved === undefined) delete process.env["EDGETUN_ADDON"];
    else process.env["EDGETUN_ADDON"] = saved;
    vi.resetModules();
  });

  it("is available in this checkout", () => {
    expect(nativeAvailable()).toBe(true);
  });

  it("says to run npm ci when the addon is not built", async () => {
    process.env["EDGETUN_ADDON"] = join(tmpdir(), "edgetun-missing", "edgetun.node");
    vi.resetModules();
    const fresh = await import("../../src/host/native/index.js");
    expect(fresh.nativeAvailable()).toBe(false);
    const error = thrown(() => fresh.UdpBatchSocket.open());
    expect(error.code).toBe("ERR_EDGETUN_ADDON_MISSING");
    expect(error.message).toMatch(/^addon not built: run npm ci/);
    expect(fresh.nativeLoadError()?.code).toBe("ERR_EDGETUN_ADDON_MISSING");
  });

  it("reports an addon file that does not load", async () => {
    const dir = mkdtempSync(join(tmpdir(), "edgetun-bad-addon-"));
    try {
      const bogus = join(dir, "edgetun.node");
      writeFileSync(bogus, "not a shared object");
      process.env["EDGETUN_ADDON"] = bogus;
      vi.resetModules();
      const fresh = await import("../../src/host/native/index.js");
      const error = thrown(() => fresh.TunDevice.open());
      expect(error.code).toBe("ERR_EDGETUN_ADDON_LOAD");
      expect(error.message).toMatch(/cannot load native addon .*run npm rebuild/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
