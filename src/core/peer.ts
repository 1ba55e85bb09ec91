// A peer: its keys, handshake, sessions, timers, endpoint and counters.
import { CookieMaker } from "./cookie.js";
import type { Endpoint } from "./endpoint.js";
import { Handshake, Keypairs, type StaticIdentity } from "./noise.js";
import { PeerTimers, type TimerActions, type TimerWheel } from "./timers.js";

/** Packets waiting for a session are bounded, oldest dropped first (as the kernel does). */
export const MAX_STAGED_PACKETS = 128;

export class Peer {
  readonly publicKey: Buffer;
  readonly publicKeyBase64: string;
  readonly handshake: Handshake;
  readonly keypairs = new Keypairs();
  readonly cookieMaker: CookieMaker;
  readonly timers: PeerTimers;
  endpoint: Endpoint | null = null;
  /** Inner packets waiting for a usable session (copies: the caller's buffers are reused). */
  staged: Uint8Array[] = [];
  /** Monotonic ms of the last initiation or response we sent; rate-limits initiations. */
  lastSentHandshakeAt = -Infinity;
  /** Wall-clock ms of the last completed handshake; 0 when none (as `wg show` reports). */
  lastHandshakeWallMs = 0;

  // Counters: wire bytes as `wg show` reports them (whole UDP payloads, handshakes included),
  // and inner (tunnel-side) packets and bytes.
  rxBytes = 0;
  txBytes = 0;
  rxPackets = 0;
  txPackets = 0;
  rxPayloadBytes = 0;
  txPayloadBytes = 0;
  keepalivesSent = 0;
  keepalivesReceived = 0;
  endpointChanges = 0;
  handshakesCompleted = 0;

  constructor(
    publicKey: Uint8Array,
    identity: StaticIdentity | null,
    wheel: TimerWheel,
    clock: () => number,
    jitter: () => number,
    actions: (peer: Peer) => TimerActions,
  ) {
    this.handshake = new Handshake(publicKey);
    // One copy of the key, shared: the handshake's, which nothing writes to.
    this.publicKey = this.handshake.remoteStatic;
    this.publicKeyBase64 = this.publicKey.toString("base64");
    this.handshake.setLocalIdentity(identity);
    this.cookieMaker = new CookieMaker(this.publicKey);
    this.timers = new PeerTimers(wheel, clock, jitter, actions(this));
  }

  get presharedKey(): Buffer {
    return this.handshake.presharedKey;
  }

  set presharedKey(key: Uint8Array) {
    if (key.length !== 32) throw new RangeError("a pre-shared key is 32 bytes");
    this.handshake.presharedKey = Buffer.from(key);
  }

  get persistentKeepalive(): number {
    return this.timers.persistentKeepaliveInterval;
  }
}
