/**
 * The batched data path: typed access to the native addon (native/*.c) that owns the TUN
 * device, the UDP socket and the per-packet ChaCha20-Poly1305.
 *
 * Everything here works on *batches*: one arena Buffer holding many packets, described by
 * parallel typed arrays (offset, length, endpoint, key slot, counter, status per packet). One
 * call moves or transforms a whole batch, so the cost of crossing from JS into C is paid
 * once per batch rather than once per packet, and nothing is allocated per packet.
 *
 * The addon is loaded lazily, on first use, so that code which only imports types or the
 * endpoint helpers still works on a machine where it has not been built.
 *
 * Endpoint records ({@link ENDPOINT_SIZE} bytes each, in a Uint8Array table):
 *
 *   bytes 0..15   IPv6 address; an IPv4 address is stored IPv4-mapped (::ffff:a.b.c.d)
 *   bytes 16..17  UDP port, network byte order
 *   bytes 18..19  zero
 *   bytes 20..23  little-endian u32: IPv6 scope id for a peer, interface index for a local
 *                 address (IP_PKTINFO/IPV6_PKTINFO)
 *
 * Bytes 0..17 are the same for the same peer whatever the socket family, so they can serve
 * directly as a map key or as the "source IP ‖ source port" input of a cookie MAC.
 */

import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { constants as osConstants } from "node:os";
import { asAreaError, NativeError } from "../errors.js";
import type { TunOffloadStats } from "./tun.js";
import type { OpenSslReferenceRates } from "./aead.js";

/** Most packets one read/receive/send call handles (the addon's scratch space is this big). */
export const MAX_BATCH = 1024;
/** Size of one endpoint record. */
export const ENDPOINT_SIZE = 24;
/** ChaCha20-Poly1305 key and tag sizes. */
export const AEAD_KEY_SIZE = 32;
export const AEAD_TAG_SIZE = 16;
/** `status[i]` of a packet that failed authentication in {@link openBatch} (-EBADMSG). */
export const STATUS_AUTH_FAILED = -(osConstants.errno.EBADMSG ?? 74);

/**
 * Takes up to `count` datagrams a native thread handed over (the ring of native/ring.h) into
 * the slots given; returns how many. One signature for the handshake lane and both data-path
 * rings.
 */
export type RingTake = (
  ring: unknown,
  arena: Uint8Array,
  offsets: Uint32Array,
  lengths: Uint32Array,
  endpoints: Uint8Array,
  locals: Uint8Array | null,
  count: number,
  room: number,
) => number;

/** The kernel's view of a UDP socket's receive queue (SO_MEMINFO). */
export interface UdpQueueStats {
  /** Bytes waiting, as the kernel accounts them (buffer overhead included). */
  queuedBytes: number;
  receiveBufferSize: number;
  /** Datagrams dropped since the socket was made because its buffer was full. */
  drops: number;
}

/** The arguments of the addon's batch seal and open, in its order. */
export type AeadBatchArguments = [
  arena: Uint8Array,
  offsets: Uint32Array,
  lengths: Uint32Array,
  keySlots: Uint32Array,
  counters: BigUint64Array | Uint32Array,
  keys: Uint8Array,
  status: Int32Array | null,
  first: number,
  count: number,
];

/** The addon's raw interface; the exported classes below are the supported way to use it. */
export interface NativeAddon {
  readonly MAX_BATCH: number;
  readonly ENDPOINT_SIZE: number;
  readonly READABLE: number;
  readonly WRITABLE: number;
  tunOpen(
    name: string,
    multiQueue: boolean,
    offload?: boolean,
    gro?: boolean,
  ): { fd: number; name: string; offload: boolean; uso: boolean };
  tunPending(fd: number): number;
  tunOffloadStats(fd: number): TunOffloadStats | null;
  tunRead(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    first: number,
    count: number,
    room: number,
  ): number;
  tunWrite(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    status: Int32Array | null,
    first: number,
    count: number,
  ): number;
  linkSetMtu(name: string, mtu: number): void;
  linkGetMtu(name: string): number;
  linkSetUp(name: string, up: boolean): void;
  linkIndex(name: string): number;
  udpBind(
    host: string,
    port: number,
    receiveBufferSize: number,
    sendBufferSize: number,
    noGso: boolean,
    reusePort?: boolean,
  ): {
    fd: number;
    port: number;
    family: 4 | 6;
    dualStack: boolean;
    gso: boolean;
    receiveBufferSize: number;
    sendBufferSize: number;
  };
  udpRecv(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Uint8Array,
    locals: Uint8Array | null,
    first: number,
    count: number,
    room: number,
  ): number;
  udpSend(
    fd: number,
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Uint8Array,
    locals: Uint8Array | null,
    status: Int32Array | null,
    first: number,
    count: number,
  ): number;
  udpSetMark(fd: number, mark: number): void;
  udpSteerHandshakes(fd: number): void;
  udpQueueStats(fd: number): UdpQueueStats;
  laneStart(fd: number, onPassed: () => void): unknown;
  laneConfigure(lane: unknown, keys: Uint8Array | null, underLoad: boolean): void;
  laneTake: RingTake;
  laneStats(lane: unknown): import("./lane.js").HandshakeLaneStats;
  laneWakeOnActivity(lane: unknown): number;
  laneStop(lane: unknown): void;
  dpCreate(tunFd: number, offload: boolean, gro: boolean, onEvent: () => void): unknown;
  dpAttach(plane: unknown, udpFd: number, readTun: boolean, sliceUs: number): void;
  dpSetMtu(plane: unknown, mtu: number): void;
  dpSetSending(
    plane: unknown,
    peer: number,
    sendKey: Uint8Array | null,
    remoteIndex: number,
    leaseStart: number,
    leaseCount: number,
    lifetimeMs: number,
    rekeyMs: number,
    endpoint: Uint8Array | null,
    local: Uint8Array | null,
  ): void;
  dpGrantLease(
    plane: unknown,
    peer: number,
    remoteIndex: number,
    start: number,
    count: number,
  ): boolean;
  dpTakeTunnel: RingTake;
  dpAddKeypair(
    plane: unknown,
    index: number,
    peer: number,
    receiveKey: Uint8Array,
    lifetimeMs: number,
  ): boolean;
  dpRemoveKeypair(plane: unknown, index: number): void;
  dpSetRoutes(plane: unknown, records: Uint8Array, count: number): void;
  dpCollect(
    plane: unknown,
    peerOut: Float64Array,
    sourcesOut: Uint8Array,
    confirmedOut: Uint32Array,
  ): { peers: number; confirmed: number };
  dpTake: RingTake;
  dpStats(plane: unknown): import("./dataplane.js").DataPlaneStats;
  dpSourceMoved(plane: unknown): boolean;
  dpBatchSizes(plane: unknown, out: Float64Array): void;
  dpClose(plane: unknown): void;
  cookieGate(
    arena: Uint8Array,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Uint8Array,
    locals: Uint8Array | null,
    count: number,
    keys: Uint8Array,
    underLoad: boolean,
    verdicts: Uint8Array,
    replyArena: Uint8Array,
    replyOffsets: Uint32Array,
    replyLengths: Uint32Array,
    replyEndpoints: Uint8Array,
    replyLocals: Uint8Array | null,
  ): number;
  aeadSealBatch(...batch: AeadBatchArguments): void;
  aeadOpenBatch(...batch: AeadBatchArguments): number;
  aeadSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array | null, data: Uint8Array): Buffer;
  aeadOpen(
    key: Uint8Array,
    nonce: Uint8Array,
    aad: Uint8Array | null,
    sealed: Uint8Array,
  ): Buffer | null;
  aeadCalibrate(packetSize: number, milliseconds: number): OpenSslReferenceRates;
  watch(fd: number, events: number, callback: (events: number, status: number) => void): void;
  watchRef(fd: number, ref: boolean): void;
  close(fd: number): void;
  /** Sends nlmsghdr-framed rtnetlink requests; errors[i] gets 0 or -errno for request i. */
  netlinkTransact(messages: Uint8Array, errors: Int32Array): number;
  /** A non-blocking rtnetlink socket subscribed to link notifications (RTMGRP_LINK). */
  linkEventsOpen(): number;
  /** Reads the queued link notifications; returns how many (lost ones count as one). */
  linkEventsDrain(fd: number): number;
  /** Writes the public key of a 32-byte private key to `out`. */
  x25519PublicKey(privateKey: Uint8Array, out: Uint8Array): void;
  /** X25519 into `out`; false (out zeroed) when the secret is all zeros. */
  x25519(
    privateKey: Uint8Array,
    privateKeysPublicKey: Uint8Array,
    peerPublicKey: Uint8Array,
    out: Uint8Array,
  ): boolean;
}

/**
 * Calls into the addon at set-up time (opening, binding, configuring), turning a system error
 * it throws into a NativeError with the same code and message. Not for the per-batch calls.
 */
export function callNative<T>(call: (addon: NativeAddon) => T): T {
  const addon = loadAddon();
  try {
    return call(addon);
  } catch (error) {
    throw asAreaError(error, (code, message, options) => new NativeError(code, message, options));
  }
}

let addon: NativeAddon | undefined;
let loadFailure: NativeError | undefined;

// This file runs from src/host/native/ under vitest and from dist/src/host/native/ once
// compiled, so the addon is three or four levels up; EDGETUN_ADDON overrides both.
function addonCandidates(): string[] {
  const override = process.env["EDGETUN_ADDON"];
  if (override !== undefined && override !== "") {
    return [override];
  }
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates: string[] = [];
  for (const up of [join("..", "..", ".."), join("..", "..", "..", "..")]) {
    for (const build of ["Release", "Debug"]) {
      candidates.push(join(here, up, "build", build, "edgetun.node"));
    }
  }
  return candidates;
}

export function loadAddon(): NativeAddon {
  if (addon !== undefined) {
    return addon;
  }
  if (loadFailure !== undefined) {
    throw loadFailure;
  }
  const candidates = addonCandidates();
  const path = candidates.find((candidate) => existsSync(candidate));
  if (path === undefined) {
    loadFailure = new NativeError(
      "ERR_EDGETUN_ADDON_MISSING",
      `addon not built: run npm ci (or npm rebuild) to compile build/Release/edgetun.node; looked in ${candidates.join(", ")}`,
    );
    throw loadFailure;
  }
  try {
    const loaded = createRequire(import.meta.url)(path) as NativeAddon;
    if (loaded.ENDPOINT_SIZE !== ENDPOINT_SIZE || loaded.MAX_BATCH !== MAX_BATCH) {
      throw new Error("addon constants do not match src/host/native (stale build?)");
    }
    addon = loaded;
    return addon;
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    const code =
      error instanceof Error && "code" in error && error.code === "ERR_EDGETUN_UNSUPPORTED_PLATFORM"
        ? "ERR_EDGETUN_UNSUPPORTED_PLATFORM"
        : "ERR_EDGETUN_ADDON_LOAD";
    loadFailure = new NativeError(
      code,
      `cannot load native addon ${path}: ${detail} (run npm rebuild)`,
      { cause: error },
    );
    throw loadFailure;
  }
}

/** True when the addon is built and loads; never throws. */
export function nativeAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

/** Why the addon cannot be used, or undefined when it can. */
export function nativeLoadError(): NativeError | undefined {
  return nativeAvailable() ? undefined : loadFailure;
}
