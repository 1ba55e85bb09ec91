// The device: owns the static identity, the peers and every table, and turns the three kinds
// of input (an inner packet from the tunnel, a datagram from the network, the passing of time)
// into actions the I/O layer carries out. No sockets, no timers of its own, no wall clock.
import { AllowedIps } from "./allowedips.js";
import { CookieChecker } from "./cookie.js";
import { DROP_REASONS, newDropCounters } from "./drops.js";
import { PrivateKey, nodeTransportCipher, systemRandom } from "./crypto.js";
import type { RandomSource, TransportCipher } from "./crypto.js";
import { IndexTable } from "./indextable.js";
import { type Keypair, StaticIdentity } from "./noise.js";
import type { Endpoint } from "./endpoint.js";
import { Peer } from "./peer.js";
import { HandshakeRateLimiter } from "./ratelimiter.js";
import { OpenJob, completeData, prepareData, receiveDatagram } from "./receive.js";
import {
  SealJob,
  abandonHandshake,
  afterDataSent,
  prepareTunnelPacket,
  sendInitiation,
  sendKeepalive,
  sendTunnelPacket,
  zeroKeyMaterial,
} from "./send.js";
import { TimerWheel, randomJitterMs } from "./timers.js";

export interface Clock {
  /** Monotonic milliseconds: every protocol timer runs on this. */
  now(): number;
  /** Wall-clock milliseconds since the Unix epoch: handshake timestamps and `wg show`. */
  wallClockMs(): number;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  wallClockMs: () => Date.now(),
};

/**
 * A data path outside the core that opens transport data itself (the native receive path)
 * keeps copies of the keypairs and allowed IPs; it is told of every change, at its cost.
 */
export interface SessionObserver {
  /** A keypair was derived: data for its local index may arrive from now on. */
  keypairInstalled(peer: Peer, keypair: Keypair): void;
  /** A keypair was dropped (rotated out, expired, peer reset or removed). */
  keypairReleased(peer: Peer, keypair: Keypair): void;
  peerRemoved(peer: Peer): void;
}

export class DeviceStats {
  /** One counter per reason of src/core/drops.ts. */
  readonly drops = newDropCounters();
  handshakeInitiationsSent = 0;
  handshakeInitiationsReceived = 0;
  handshakeResponsesSent = 0;
  handshakeResponsesReceived = 0;
  handshakesCompleted = 0;
  cookieRepliesSent = 0;
  cookieRepliesReceived = 0;

  get totalDrops(): number {
    let total = 0;
    for (const reason of DROP_REASONS) total += this.drops[reason];
    return total;
  }
}

/**
 * What the I/O layer should do: datagrams to send (with their endpoints and peers) and inner
 * packets to write to the tunnel. Appended to by every Device call; the caller flushes and
 * clears it, so one flush can carry a whole batch.
 */
export class ActionBatch {
  readonly datagrams: Buffer[] = [];
  readonly endpoints: Endpoint[] = [];
  readonly tunnelPackets: Uint8Array[] = [];

  get empty(): boolean {
    return this.datagrams.length === 0 && this.tunnelPackets.length === 0;
  }

  clear(): void {
    this.datagrams.length = 0;
    this.endpoints.length = 0;
    this.tunnelPackets.length = 0;
  }
}

/** An index belongs either to a handshake in flight or to an established keypair. */
export interface IndexEntry {
  readonly peer: Peer;
  readonly keypair: Keypair | null;
}

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: Endpoint | null;
  allowedIps?: ReadonlyArray<{ address: Uint8Array; cidr: number }>;
  /** Seconds; 0 or absent disables. */
  persistentKeepalive?: number;
}

export interface DeviceOptions {
  clock?: Clock;
  random?: RandomSource;
  cipher?: TransportCipher;
  privateKey?: Uint8Array | null;
  mtu?: number;
  /** Handshake messages per second above which the device asks for cookies. */
  underLoadHandshakesPerSecond?: number;
  /** Wasted handshake messages per second above which it does (see wastedHandshakesPerSecond). */
  wastedHandshakesPerSecond?: number;
}

/** How long the device stays "under load" after the last evidence of load. */
const UNDER_LOAD_LINGER_MS = 1000;
/**
 * Handshake messages a second that may come to nothing in the core before the device asks for
 * cookies: some 7 % of the Diffie-Hellman a hub of a 2-core machine does in a second (about
 * 3,900 handshakes), and far more than a fleet's own misfits (a peer removed while its edge
 * still knocks costs one every Rekey-Timeout).
 */
export const WASTED_HANDSHAKES_PER_SECOND = 256;

export class Device {
  readonly clock: Clock;
  readonly random: RandomSource;
  readonly cipher: TransportCipher;
  readonly stats = new DeviceStats();
  readonly actions = new ActionBatch();
  readonly allowedIps = new AllowedIps<Peer>();
  readonly indexTable: IndexTable<IndexEntry>;
  readonly cookieChecker: CookieChecker;
  readonly rateLimiter = new HandshakeRateLimiter();
  readonly wheel: TimerWheel;
  readonly peers = new Map<string, Peer>();
  identity: StaticIdentity | null = null;
  mtu: number;

  /**
   * Handshake messages per second above which the device asks for cookies. The I/O layer may
   * judge load better (by how long messages wait, as the handshake lane does) and raise it.
   */
  underLoadHandshakesPerSecond: number;
  private handshakeWindowStart = 0;
  private handshakesInWindow = 0;
  /**
   * The load rule that serves a flood and a fleet alike: evidence of load is work that came to
   * nothing, not how many messages come. A handshake message that passed mac1 yet failed in
   * the core (an unknown static key, a static or timestamp that does not decrypt, a replayed
   * or stale timestamp, a response to no handshake of ours) cost Diffie-Hellman or a look-up
   * for nothing; a fleet's genuine initiations never do, however many arrive at once. Once
   * more than this many a second came to nothing the device asks for cookies, and while it
   * does, the messages it turns away for want of a cookie count the same (each would have
   * gone to Diffie-Hellman), so a flood above this rate stays turned away for as long as it
   * lasts, and the verdict lapses a linger after it ends.
   */
  wastedHandshakesPerSecond: number;
  private wastedWindowStart = -Infinity;
  private wastedInWindow = 0;
  private underLoadUntil = -Infinity;
  /**
   * Set by the I/O layer while handshake messages arrive faster than it takes them in (its
   * queue overflowed or more wait than a turn takes): under load, whatever the rate here.
   */
  handshakesBacklogged = false;
  /**
   * Called when a handshake with `peer` completes (a response consumed, or the first data on
   * a session we answered): its new keypair is `peer.keypairs.current`. For observers such as
   * the metrics, which then need not parse packets themselves.
   */
  onHandshakeCompleted: ((peer: Peer) => void) | null = null;
  /** See {@link SessionObserver}; null: the core opens all data itself. */
  sessionObserver: SessionObserver | null = null;

  constructor(options: DeviceOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? systemRandom;
    this.cipher = options.cipher ?? nodeTransportCipher;
    this.mtu = options.mtu ?? 1420;
    this.underLoadHandshakesPerSecond = options.underLoadHandshakesPerSecond ?? 1000;
    this.wastedHandshakesPerSecond =
      options.wastedHandshakesPerSecond ?? WASTED_HANDSHAKES_PER_SECOND;
    this.indexTable = new IndexTable(this.random);
    this.cookieChecker = new CookieChecker(this.random);
    this.wheel = new TimerWheel(this.clock.now());
    if (options.privateKey) this.setPrivateKey(options.privateKey);
  }

  get publicKey(): Buffer | null {
    return this.identity?.publicKey ?? null;
  }

  /**
   * Sets or clears the static private key. Every session is dropped, since they were derived
   * from the old key; a peer whose public key equals ours is removed, as no handshake with
   * ourselves is possible.
   */
  setPrivateKey(raw: Uint8Array | null): void {
    const identity = raw ? new StaticIdentity(new PrivateKey(raw)) : null;
    if (identity && this.identity && identity.publicKey.equals(this.identity.publicKey)) return;
    this.identity = identity;
    this.cookieChecker.setPublicKey(identity?.publicKey ?? null);
    for (const peer of [...this.peers.values()]) {
      if (identity && peer.publicKey.equals(identity.publicKey)) {
        this.removePeer(peer.publicKey);
        continue;
      }
      this.resetPeerSessions(peer);
      peer.handshake.setLocalIdentity(identity);
    }
  }

  addPeer(config: PeerConfig): Peer {
    const key = Buffer.from(config.publicKey).toString("base64");
    if (this.peers.has(key)) throw new Error(`peer ${key} already exists`);
    const peer = new Peer(
      config.publicKey,
      this.identity,
      this.wheel,
      () => this.clock.now(),
      () => randomJitterMs(() => this.randomFraction()),
      (p) => ({
        sendInitiation: (isRetry) => sendInitiation(this, p, isRetry),
        sendKeepalive: () => sendKeepalive(this, p),
        abandonHandshake: () => abandonHandshake(this, p),
        zeroKeyMaterial: () => zeroKeyMaterial(this, p),
      }),
    );
    this.peers.set(key, peer);
    this.updatePeer(peer, config);
    return peer;
  }

  /** Applies the given settings to an existing peer; absent fields are left as they are. */
  updatePeer(peer: Peer, config: Partial<PeerConfig>): void {
    if (config.presharedKey) peer.presharedKey = config.presharedKey;
    if (config.endpoint !== undefined) peer.endpoint = config.endpoint;
    if (config.allowedIps) {
      for (const { address, cidr } of config.allowedIps) {
        this.allowedIps.insert(address, cidr, peer);
      }
    }
    if (config.persistentKeepalive !== undefined) {
      this.setPersistentKeepalive(peer, config.persistentKeepalive);
    }
  }

  setPersistentKeepalive(peer: Peer, seconds: number): void {
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 65535) {
      throw new RangeError("persistent keepalive is 0 to 65535 seconds");
    }
    const wasOff = peer.timers.persistentKeepaliveInterval === 0;
    peer.timers.persistentKeepaliveInterval = seconds;
    // Turning it on sends one at once, so a peer behind NAT becomes reachable straight away.
    if (wasOff && seconds > 0 && this.identity) sendKeepalive(this, peer);
  }

  peer(publicKey: Uint8Array): Peer | undefined {
    return this.peers.get(Buffer.from(publicKey).toString("base64"));
  }

  removePeer(publicKey: Uint8Array): boolean {
    const peer = this.peer(publicKey);
    if (!peer) return false;
    this.resetPeerSessions(peer);
    peer.timers.stopAll();
    this.allowedIps.removeByValue(peer);
    this.peers.delete(peer.publicKeyBase64);
    this.sessionObserver?.peerRemoved(peer);
    return true;
  }

  /** An inner packet read from the tunnel interface. */
  handleTunnelPacket(packet: Uint8Array): ActionBatch {
    sendTunnelPacket(this, packet);
    return this.actions;
  }

  /** A datagram received on the UDP socket from `source`. */
  handleDatagram(datagram: Uint8Array, source: Endpoint): ActionBatch {
    receiveDatagram(this, datagram, source);
    return this.actions;
  }

  // The batched data path: the same decisions as handleTunnelPacket/handleDatagram, split
  // around the encryption so that the I/O layer can seal or open a whole batch in one call.
  private readonly sealJob = new SealJob();
  private readonly openJob = new OpenJob();

  /**
   * Routes an inner packet; when it can go out at once, reserves its counter and returns what
   * to seal it with (valid until the next call). Otherwise it was staged or dropped: null.
   */
  prepareTunnelPacket(packet: Uint8Array): SealJob | null {
    return prepareTunnelPacket(this, packet, this.sealJob);
  }

  /** After a batch of sealed packets went out: one call per packet sent with `keypair`. */
  dataSent(peer: Peer, keypair: Keypair): void {
    afterDataSent(this, peer, keypair, true);
  }

  /**
   * Checks a transport message (already classified as type 4 of a valid length) before
   * decryption: which keypair and counter it claims. Null when dropped (counted).
   */
  prepareData(message: Uint8Array): OpenJob | null {
    return prepareData(this, message, this.openJob);
  }

  /**
   * After `plaintext` authenticated under (peer, keypair, counter): returns the inner packet
   * for the tunnel, or null when it was a keepalive or was dropped (counted).
   */
  completeData(
    peer: Peer,
    keypair: Keypair,
    counter: number,
    plaintext: Uint8Array,
    messageLength: number,
    source: Endpoint,
  ): Uint8Array | null {
    const job = this.openJob;
    job.peer = peer;
    job.keypair = keypair;
    job.counter = counter;
    return completeData(this, job, plaintext, messageLength, source);
  }

  /**
   * Runs the timers that are due. A host calls it when `wheel.nextDueMs()` comes (or sooner,
   * told by `wheel.onEarlierDue`), or simply every `wheel.granularityMs`.
   */
  tick(): ActionBatch {
    this.wheel.advance(this.clock.now());
    return this.actions;
  }

  /**
   * Counts `count` handshake messages (0: only asks); true while they arrive faster than we
   * want to spend DH on.
   */
  recordHandshakeMessage(nowMs: number, count = 1): boolean {
    if (nowMs - this.handshakeWindowStart >= 1000) {
      this.handshakeWindowStart = nowMs;
      this.handshakesInWindow = 0;
    }
    this.handshakesInWindow += count;
    if (this.handshakesInWindow > this.underLoadHandshakesPerSecond || this.handshakesBacklogged) {
      this.underLoadUntil = nowMs + UNDER_LOAD_LINGER_MS;
    }
    return nowMs < this.underLoadUntil;
  }

  /**
   * Counts `count` handshake messages that came to nothing (see wastedHandshakesPerSecond):
   * failed in the core after passing mac1, or turned away for want of a cookie while under
   * load. The window starts at the first such message after a quiet second, so a burst puts
   * the device under load after at most the threshold (twice it if the burst straddles two
   * windows). Returns the verdict.
   */
  recordWastedHandshakes(nowMs: number, count = 1): boolean {
    if (nowMs - this.wastedWindowStart >= 1000) {
      this.wastedWindowStart = nowMs;
      this.wastedInWindow = 0;
    }
    this.wastedInWindow += count;
    if (this.wastedInWindow > this.wastedHandshakesPerSecond) {
      this.underLoadUntil = nowMs + UNDER_LOAD_LINGER_MS;
    }
    return nowMs < this.underLoadUntil;
  }

  get underLoad(): boolean {
    return this.clock.now() < this.underLoadUntil;
  }

  /** Drops a peer's sessions and handshake and frees their indices. */
  resetPeerSessions(peer: Peer): void {
    for (const keypair of peer.keypairs.clear()) this.releaseKeypair(peer, keypair);
    this.indexTable.remove(peer.handshake.localIndex, this.handshakeEntry(peer));
    peer.handshake.clear();
    peer.staged = [];
  }

  releaseKeypair(peer: Peer, keypair: Keypair): void {
    const entry = this.indexTable.lookup(keypair.localIndex);
    if (entry && entry.peer === peer && entry.keypair === keypair) {
      this.indexTable.remove(keypair.localIndex, entry);
      this.sessionObserver?.keypairReleased(peer, keypair);
    }
  }

  /** The index-table entry of a peer's handshake; one object per peer, so identity works. */
  handshakeEntry(peer: Peer): IndexEntry {
    let entry = this.handshakeEntries.get(peer);
    if (!entry) {
      entry = { peer, keypair: null };
      this.handshakeEntries.set(peer, entry);
    }
    return entry;
  }
  private readonly handshakeEntries = new WeakMap<Peer, IndexEntry>();

  /**
   * Random fractions for timer jitter, drawn from a pool filled 1,024 at a time: jitter needs
   * no secrecy, and one fill per draw cost a call into the random source (a getrandom-backed
   * one in production) for every data packet sent after an answer arrived.
   */
  private readonly fractionPool = new Uint32Array(1024);
  private fractionsLeft = 0;
  randomFraction(): number {
    if (this.fractionsLeft === 0) {
      this.random.fill(new Uint8Array(this.fractionPool.buffer));
      this.fractionsLeft = this.fractionPool.length;
    }
    return this.fractionPool[--this.fractionsLeft]! / 0x100000000;
  }
}
