// The send path: inner packets to transport messages, handshake messages, keepalives.
import type { Device } from "./device.js";
import {
  DATA_HEADER_LENGTH,
  MessageType,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME_MS,
  REKEY_TIMEOUT_MS,
  TAG_LENGTH,
  paddedLength,
  writeDataHeader,
} from "./messages.js";
import { beginSession, createInitiation, createResponse, type Keypair } from "./noise.js";
import { MAX_STAGED_PACKETS, type Peer } from "./peer.js";

const EMPTY = new Uint8Array(0);

/**
 * What the batched data path needs to seal one packet in place: filled in by
 * {@link prepareTunnelPacket}, one reused object, read before the next call.
 */
export class SealJob {
  peer: Peer | null = null;
  keypair: Keypair | null = null;
  counter = 0;
  /** Plaintext length after zero padding. */
  paddedLength = 0;
}

/**
 * Routes an inner packet and, when its peer has a usable session and nothing queued ahead of
 * it, reserves a counter for it and returns the job to seal it with (the caller encrypts and
 * sends, then calls {@link afterDataSent}). Otherwise the packet is staged (copied) or
 * dropped and counted, a handshake is started if needed, and null is returned.
 */
export function prepareTunnelPacket(
  device: Device,
  packet: Uint8Array,
  job: SealJob,
): SealJob | null {
  const version = packet.length > 0 ? packet[0]! >> 4 : 0;
  let peer: Peer | undefined;
  if (version === 4 && packet.length >= 20) peer = device.allowedIps.lookupV4(packet, 16);
  else if (version === 6 && packet.length >= 40) peer = device.allowedIps.lookupV6(packet, 24);
  else {
    device.stats.drops.bad_inner_packet++;
    return null;
  }
  if (!peer) {
    device.stats.drops.no_route++;
    return null;
  }
  if (!device.identity) {
    device.stats.drops.no_identity++;
    return null;
  }
  if (!peer.endpoint) {
    device.stats.drops.no_endpoint++;
    return null;
  }
  const keypair = usableSendingKeypair(device, peer);
  if (keypair && peer.staged.length === 0) {
    job.peer = peer;
    job.keypair = keypair;
    job.counter = keypair.sendingCounter++;
    job.paddedLength = paddedLength(packet.length, device.mtu);
    peer.txPackets++;
    peer.txPayloadBytes += packet.length;
    peer.txBytes += DATA_HEADER_LENGTH + job.paddedLength + TAG_LENGTH;
    return job;
  }
  stage(device, peer, new Uint8Array(packet));
  sendStaged(device, peer);
  return null;
}

const jsSealJob = new SealJob();

/** An inner packet from the tunnel, sealed one at a time with the device's cipher. */
export function sendTunnelPacket(device: Device, packet: Uint8Array): void {
  const job = prepareTunnelPacket(device, packet, jsSealJob);
  if (!job) return;
  const { peer, keypair } = job as { peer: Peer; keypair: Keypair };
  const datagram = sealDatagram(device, keypair, job.counter, packet, job.paddedLength);
  emit(device, peer, datagram, false);
  afterDataSent(device, peer, keypair, true);
}

function stage(device: Device, peer: Peer, packet: Uint8Array): void {
  if (peer.staged.length >= MAX_STAGED_PACKETS) {
    peer.staged.shift();
    device.stats.drops.queue_full++;
  }
  peer.staged.push(packet);
}

function usableSendingKeypair(device: Device, peer: Peer): Keypair | null {
  const keypair = peer.keypairs.current;
  if (
    !keypair ||
    !keypair.sendingValid ||
    keypair.sendingCounter >= REJECT_AFTER_MESSAGES ||
    device.clock.now() - keypair.createdAt >= REJECT_AFTER_TIME_MS
  ) {
    return null;
  }
  return keypair;
}

/** Sends what is staged if a session allows it; otherwise asks for a handshake. */
export function sendStaged(device: Device, peer: Peer): void {
  if (peer.staged.length === 0) return;
  const keypair = usableSendingKeypair(device, peer);
  if (!keypair || !peer.endpoint) {
    sendInitiation(device, peer, false);
    return;
  }
  const packets = peer.staged;
  peer.staged = [];
  let sentData = false;
  for (const packet of packets) {
    encryptAndEmit(device, peer, keypair, packet);
    if (packet.length > 0) sentData = true;
  }
  afterDataSent(device, peer, keypair, sentData);
}

function encryptAndEmit(device: Device, peer: Peer, keypair: Keypair, packet: Uint8Array): void {
  const counter = keypair.sendingCounter++;
  const padded = paddedLength(packet.length, device.mtu);
  emit(device, peer, sealDatagram(device, keypair, counter, packet, padded), true);
  if (packet.length === 0) peer.keepalivesSent++;
  else {
    peer.txPackets++;
    peer.txPayloadBytes += packet.length;
  }
}

/** A transport message: header, then the zero-padded packet sealed with the counter nonce. */
function sealDatagram(
  device: Device,
  keypair: Keypair,
  counter: number,
  packet: Uint8Array,
  padded: number,
): Buffer {
  const datagram = Buffer.alloc(DATA_HEADER_LENGTH + padded + TAG_LENGTH);
  writeDataHeader(datagram, 0, keypair.remoteIndex, counter);
  // Zero padding is already there from Buffer.alloc; the cipher reads the padded plaintext.
  const body = datagram.subarray(DATA_HEADER_LENGTH, DATA_HEADER_LENGTH + padded);
  body.set(packet);
  device.cipher.seal(keypair.sendingKey, counter, body, datagram.subarray(DATA_HEADER_LENGTH));
  return datagram;
}

function emit(device: Device, peer: Peer, datagram: Buffer, countBytes = true): void {
  if (!peer.endpoint) return;
  device.actions.datagrams.push(datagram);
  device.actions.endpoints.push(peer.endpoint);
  if (countBytes) peer.txBytes += datagram.length;
}

/** Timer hooks and the keep-key-fresh check after data went out on `keypair`. */
export function afterDataSent(
  device: Device,
  peer: Peer,
  keypair: Keypair,
  sentData: boolean,
): void {
  peer.timers.anyAuthenticatedPacketTraversal();
  peer.timers.anyAuthenticatedPacketSent();
  if (sentData) peer.timers.dataSent();
  keepKeyFreshOnSend(device, peer, keypair);
}

/** Rekey after enough messages, or (as initiator) after enough time. */
function keepKeyFreshOnSend(device: Device, peer: Peer, keypair: Keypair): void {
  if (
    keypair.sendingCounter > REKEY_AFTER_MESSAGES ||
    (keypair.isInitiator && device.clock.now() - keypair.createdAt >= REKEY_AFTER_TIME_MS)
  ) {
    sendInitiation(device, peer, false);
  }
}

/**
 * Sets `count` sending counters of the peer's current keypair aside for a data path that
 * seals outside the core (the native send thread): returns the first, or null when the
 * keypair may not send that many more (Reject-After-Messages). The core's own messages on the
 * keypair take counters after every lease, so no counter is used twice.
 */
export function lendCounters(keypair: Keypair, count: number): number | null {
  const start = keypair.sendingCounter;
  if (!keypair.sendingValid || start + count >= REJECT_AFTER_MESSAGES) return null;
  keypair.sendingCounter += count;
  return start;
}

/** What a data path outside the core sealed and sent for one peer since it last reported. */
export interface SentElsewhere {
  txPackets: number;
  /** Whole transport messages, as `wg show` counts them. */
  txBytes: number;
  txPayloadBytes: number;
}

/**
 * The bookkeeping of {@link afterDataSent}, once per report of a data path that sealed the
 * packets itself with the peer's current keypair: counters, timers, keeping the key fresh.
 */
export function sentElsewhere(device: Device, peer: Peer, report: SentElsewhere): void {
  if (report.txPackets === 0) return;
  peer.txPackets += report.txPackets;
  peer.txBytes += report.txBytes;
  peer.txPayloadBytes += report.txPayloadBytes;
  peer.timers.anyAuthenticatedPacketTraversal();
  peer.timers.anyAuthenticatedPacketSent();
  peer.timers.dataSent();
  const keypair = peer.keypairs.current;
  if (keypair) keepKeyFreshOnSend(device, peer, keypair);
}

/** A keepalive (an empty transport message), or the staged packets if there are any. */
export function sendKeepalive(device: Device, peer: Peer): void {
  if (peer.staged.length === 0) stage(device, peer, EMPTY);
  sendStaged(device, peer);
}

/**
 * Sends a handshake initiation unless one went out less than Rekey-Timeout ago. `isRetry` is
 * set by the retransmit timer; anything else starts a fresh series of attempts.
 */
export function sendInitiation(device: Device, peer: Peer, isRetry: boolean): void {
  if (!isRetry) peer.timers.handshakeAttempts = 0;
  const now = device.clock.now();
  if (now - peer.lastSentHandshakeAt < REKEY_TIMEOUT_MS) return;
  const identity = device.identity;
  if (!identity) return;
  peer.lastSentHandshakeAt = now;

  const entry = device.handshakeEntry(peer);
  device.indexTable.remove(peer.handshake.localIndex, entry);
  peer.handshake.localIndex = device.indexTable.allocate(entry);
  const message = createInitiation(
    identity,
    peer.handshake,
    device.clock.wallClockMs(),
    device.random,
  );
  if (!message) {
    device.indexTable.remove(peer.handshake.localIndex, entry);
    return;
  }
  peer.cookieMaker.addMacs(message, MessageType.HandshakeInitiation, now);
  peer.timers.anyAuthenticatedPacketTraversal();
  peer.timers.anyAuthenticatedPacketSent();
  if (peer.endpoint) {
    emit(device, peer, message);
    device.stats.handshakeInitiationsSent++;
  } else {
    device.stats.drops.no_endpoint++;
  }
  peer.timers.handshakeInitiated();
}

/** Answers the initiation this peer's handshake consumed, and derives the session. */
export function sendResponse(device: Device, peer: Peer): void {
  const now = device.clock.now();
  peer.lastSentHandshakeAt = now;
  const entry = device.handshakeEntry(peer);
  device.indexTable.remove(peer.handshake.localIndex, entry);
  peer.handshake.localIndex = device.indexTable.allocate(entry);
  const message = createResponse(peer.handshake, device.random);
  if (!message) {
    device.indexTable.remove(peer.handshake.localIndex, entry);
    peer.handshake.clear();
    device.stats.drops.handshake_decryption_failed++;
    return;
  }
  peer.cookieMaker.addMacs(message, MessageType.HandshakeResponse, now);
  const keypair = beginSession(peer.handshake, now);
  if (keypair) installKeypair(device, peer, keypair);
  peer.timers.anyAuthenticatedPacketTraversal();
  peer.timers.anyAuthenticatedPacketSent();
  emit(device, peer, message);
  device.stats.handshakeResponsesSent++;
}

/** Puts a new session in place and hands its handshake's index over to it. */
export function installKeypair(device: Device, peer: Peer, keypair: Keypair): void {
  device.indexTable.replace(keypair.localIndex, { peer, keypair });
  device.sessionObserver?.keypairInstalled(peer, keypair);
  for (const dropped of peer.keypairs.add(keypair)) device.releaseKeypair(peer, dropped);
  device.sessionObserver?.sendingChanged(peer);
  peer.timers.sessionDerived();
}

/** Handshake attempts are exhausted: what waited for the session is dropped. */
export function abandonHandshake(device: Device, peer: Peer): void {
  device.stats.drops.handshake_abandoned += peer.staged.length;
  peer.staged = [];
}

/** No session for 3 × Reject-After-Time: forget all key material. */
export function zeroKeyMaterial(device: Device, peer: Peer): void {
  for (const keypair of peer.keypairs.clear()) device.releaseKeypair(peer, keypair);
  device.sessionObserver?.sendingChanged(peer);
  device.indexTable.remove(peer.handshake.localIndex, device.handshakeEntry(peer));
  peer.handshake.clear();
}
