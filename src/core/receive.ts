// The receive path: datagrams from the network to handshake state, cookies and inner packets.
import { parseCidr } from "./ipaddr.js";
import type { Device } from "./device.js";
import {
  COOKIE_RECEIVER,
  DATA_COUNTER,
  DATA_HEADER_LENGTH,
  DATA_RECEIVER,
  KEEPALIVE_TIMEOUT_MS,
  MessageType,
  REJECT_AFTER_MESSAGES,
  REJECT_AFTER_TIME_MS,
  REKEY_TIMEOUT_MS,
  RESPONSE_RECEIVER,
  classifyMessage,
  readCounter,
  readUint32,
} from "./messages.js";
import { beginSession, consumeInitiation, consumeResponse, type Keypair } from "./noise.js";
import { sameEndpoint, type Endpoint } from "./endpoint.js";
import type { Peer } from "./peer.js";
import { installKeypair, sendInitiation, sendKeepalive, sendResponse, sendStaged } from "./send.js";

export function receiveDatagram(device: Device, datagram: Uint8Array, source: Endpoint): void {
  const check = classifyMessage(datagram);
  if (!check.ok) {
    device.stats.drops[check.reason]++;
    return;
  }
  switch (check.type) {
    case MessageType.TransportData:
      receiveData(device, datagram, source);
      return;
    case MessageType.CookieReply:
      receiveCookieReply(device, datagram);
      return;
    case MessageType.HandshakeInitiation:
    case MessageType.HandshakeResponse:
      receiveHandshake(device, datagram, check.type, source);
      return;
  }
}

/** IP bytes ‖ port bytes (big-endian): what a cookie binds to. */
function sourceIdentity(source: Endpoint): { ip: Uint8Array; ipAndPort: Uint8Array } | null {
  let ip: Uint8Array;
  try {
    ip = parseCidr(source.address).address;
  } catch {
    return null;
  }
  const ipAndPort = new Uint8Array(ip.length + 2);
  ipAndPort.set(ip);
  ipAndPort[ip.length] = source.port >> 8;
  ipAndPort[ip.length + 1] = source.port & 0xff;
  return { ip, ipAndPort };
}

function receiveHandshake(
  device: Device,
  message: Uint8Array,
  type: MessageType.HandshakeInitiation | MessageType.HandshakeResponse,
  source: Endpoint,
): void {
  const identity = device.identity;
  if (!identity) {
    device.stats.drops.no_identity++;
    return;
  }
  const now = device.clock.now();
  const underLoad = device.recordHandshakeMessage(now);
  const origin = sourceIdentity(source);
  if (!origin) {
    device.stats.drops.bad_mac1++;
    return;
  }
  const macs = device.cookieChecker.check(message, type, origin.ipAndPort, now, underLoad);
  if (macs === "invalid_mac1") {
    device.stats.drops.bad_mac1++;
    return;
  }
  if (underLoad) {
    if (macs === "valid_mac1_no_cookie") {
      // Make the sender prove its address before we spend Diffie-Hellman on it.
      const reply = device.cookieChecker.createReply(message, type, origin.ipAndPort, now);
      if (reply) {
        device.actions.datagrams.push(reply);
        device.actions.endpoints.push(source);
        device.stats.cookieRepliesSent++;
      }
      device.stats.drops.cookie_required++;
      device.recordWastedHandshakes(now); // it would have gone to Diffie-Hellman
      return;
    }
    if (!device.rateLimiter.allow(origin.ip, now)) {
      device.stats.drops.rate_limited++;
      return;
    }
  }

  if (type === MessageType.HandshakeInitiation) {
    device.stats.handshakeInitiationsReceived++;
    const result = consumeInitiation(identity, message, (key) => device.peer(key), now);
    if (!result.ok) {
      device.stats.drops[result.reason]++;
      // Diffie-Hellman spent for nothing: evidence of a flood. Not so an initiation too soon
      // after its peer's last: only the peer's own key makes a fresh timestamp, and a fleet's
      // retry taken just behind its first try from a backlog is one.
      if (result.reason !== "handshake_flood") device.recordWastedHandshakes(now);
      return;
    }
    const peer = result.peer;
    authenticatedFrom(device, peer, source, message.length);
    sendResponse(device, peer);
    return;
  }

  device.stats.handshakeResponsesReceived++;
  const entry = device.indexTable.lookup(readUint32(message, RESPONSE_RECEIVER));
  if (!entry || entry.keypair) {
    device.stats.drops.unknown_index++;
    device.recordWastedHandshakes(now);
    return;
  }
  const peer = entry.peer;
  const result = consumeResponse(identity, peer.handshake, message);
  if (!result.ok) {
    device.stats.drops[result.reason]++;
    device.recordWastedHandshakes(now);
    return;
  }
  const keypair = beginSession(peer.handshake, now);
  if (!keypair) return;
  installKeypair(device, peer, keypair);
  handshakeCompleted(device, peer);
  authenticatedFrom(device, peer, source, message.length);
  // Confirm the session at once so the responder may start sending: staged data or a keepalive.
  sendKeepalive(device, peer);
}

function handshakeCompleted(device: Device, peer: Peer): void {
  peer.timers.handshakeComplete();
  peer.lastHandshakeWallMs = device.clock.wallClockMs();
  peer.handshakesCompleted++;
  device.stats.handshakesCompleted++;
  device.onHandshakeCompleted?.(peer);
}

/** Bookkeeping for any authenticated message: roaming, counters, timers. */
function authenticatedFrom(device: Device, peer: Peer, source: Endpoint, length: number): void {
  if (!sameEndpoint(peer.endpoint, source)) {
    if (peer.endpoint) peer.endpointChanges++;
    peer.endpoint = source;
  }
  peer.rxBytes += length;
  peer.timers.anyAuthenticatedPacketReceived();
  peer.timers.anyAuthenticatedPacketTraversal();
}

function receiveCookieReply(device: Device, message: Uint8Array): void {
  const entry = device.indexTable.lookup(readUint32(message, COOKIE_RECEIVER));
  if (!entry) {
    device.stats.drops.unknown_index++;
    return;
  }
  if (!entry.peer.cookieMaker.consumeReply(message, device.clock.now())) {
    device.stats.drops.bad_cookie_reply++;
    return;
  }
  device.stats.cookieRepliesReceived++;
}

/**
 * What the batched data path needs to open one transport message in place: filled in by
 * {@link prepareData}, one reused object, read before the next call.
 */
export class OpenJob {
  peer: Peer | null = null;
  keypair: Keypair | null = null;
  counter = 0;
}

/**
 * First half of receiving transport data, before decryption: finds the keypair by receiver
 * index and checks it may still receive. Returns null (dropped and counted) otherwise.
 */
export function prepareData(device: Device, message: Uint8Array, job: OpenJob): OpenJob | null {
  const entry = device.indexTable.lookup(readUint32(message, DATA_RECEIVER));
  const keypair = entry?.keypair;
  if (!entry || !keypair) {
    device.stats.drops.unknown_index++;
    return null;
  }
  if (!keypair.receivingValid || device.clock.now() - keypair.createdAt >= REJECT_AFTER_TIME_MS) {
    device.stats.drops.key_expired++;
    return null;
  }
  const counter = readCounter(message, DATA_COUNTER);
  if (counter >= REJECT_AFTER_MESSAGES) {
    device.stats.drops.counter_too_large++;
    return null;
  }
  job.peer = entry.peer;
  job.keypair = keypair;
  job.counter = counter;
  return job;
}

/**
 * Second half, after the message authenticated: replay check, session confirmation, timers,
 * roaming, and the inner packet's checks. Returns the inner IP packet (a view of `plaintext`
 * trimmed to its header's length) to hand to the tunnel, or null (a keepalive, or dropped and
 * counted).
 */
export function completeData(
  device: Device,
  job: OpenJob,
  plaintext: Uint8Array,
  messageLength: number,
  source: Endpoint,
): Uint8Array | null {
  const peer = job.peer!;
  const keypair = job.keypair!;
  // The replay window is updated only after authentication, so forged counters cannot move it.
  if (!keypair.replay.accept(job.counter)) {
    device.stats.drops.replayed++;
    return null;
  }
  const confirmed = peer.keypairs.receivedWith(keypair);
  if (confirmed) {
    for (const dropped of confirmed) device.releaseKeypair(peer, dropped);
    handshakeCompleted(device, peer);
    sendStaged(device, peer);
  }
  keepKeyFreshOnReceive(device, peer, device.clock.now());
  authenticatedFrom(device, peer, source, messageLength);

  if (plaintext.length === 0) {
    peer.keepalivesReceived++;
    return null;
  }
  peer.timers.dataReceived();

  const packet = checkedInnerPacket(plaintext);
  if (!packet) {
    device.stats.drops.bad_inner_packet++;
    return null;
  }
  const version = packet[0]! >> 4;
  const routedPeer =
    version === 4 ? device.allowedIps.lookupV4(packet, 12) : device.allowedIps.lookupV6(packet, 8);
  if (routedPeer !== peer) {
    device.stats.drops.source_not_allowed++;
    return null;
  }
  peer.rxPackets++;
  peer.rxPayloadBytes += packet.length;
  return packet;
}

const jsOpenJob = new OpenJob();

function receiveData(device: Device, message: Uint8Array, source: Endpoint): void {
  const job = prepareData(device, message, jsOpenJob);
  if (!job) return;
  const plaintext = device.cipher.open(
    job.keypair!.receivingKey,
    job.counter,
    message.subarray(DATA_HEADER_LENGTH),
  );
  if (!plaintext) {
    device.stats.drops.decryption_failed++;
    return;
  }
  const packet = completeData(device, job, plaintext, message.length, source);
  if (packet) device.actions.tunnelPackets.push(packet);
}

/**
 * An initiator whose session nears Reject-After-Time rekeys once on receive, so a session that
 * only receives is still renewed before it must be dropped.
 */
function keepKeyFreshOnReceive(device: Device, peer: Peer, now: number): void {
  const current = peer.keypairs.current;
  if (
    current &&
    current.sendingValid &&
    current.isInitiator &&
    !peer.timers.sentLastMinuteHandshake &&
    now - current.createdAt >= REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS
  ) {
    peer.timers.sentLastMinuteHandshake = true;
    sendInitiation(device, peer, false);
  }
}

/** The IP packet inside padded plaintext, trimmed to its header's length; null if malformed. */
function checkedInnerPacket(plaintext: Uint8Array): Uint8Array | null {
  const version = plaintext[0]! >> 4;
  let length: number;
  if (version === 4 && plaintext.length >= 20) {
    length = (plaintext[2]! << 8) | plaintext[3]!;
    if (length < 20) return null;
  } else if (version === 6 && plaintext.length >= 40) {
    length = ((plaintext[4]! << 8) | plaintext[5]!) + 40;
  } else {
    return null;
  }
  if (length > plaintext.length) return null;
  return plaintext.subarray(0, length);
}

/**
 * What a data path outside the core (the native receive path) authenticated for one peer
 * since it last reported: its packets passed the replay window there, `data` of them carried
 * a packet (the rest were keepalives). `source` is where the latest came from.
 */
export interface ReceivedElsewhere {
  authenticated: number;
  data: number;
  /** Whole transport messages, as `wg show` counts them. */
  rxBytes: number;
  /** Inner packets handed to the tunnel, and their bytes. */
  rxPackets: number;
  rxPayloadBytes: number;
  keepalives: number;
  source: Endpoint;
}

/**
 * The bookkeeping {@link completeData} does per packet, once per report of a data path that
 * opened them itself: timers, roaming, counters and the last-minute rekey. The timers then
 * decide what they would have decided, late by at most the report interval.
 */
export function receivedElsewhere(device: Device, peer: Peer, report: ReceivedElsewhere): void {
  if (report.authenticated === 0) return;
  keepKeyFreshOnReceive(device, peer, device.clock.now());
  authenticatedFrom(device, peer, report.source, report.rxBytes);
  peer.keepalivesReceived += report.keepalives;
  if (report.data > 0) peer.timers.dataReceived();
  peer.rxPackets += report.rxPackets;
  peer.rxPayloadBytes += report.rxPayloadBytes;
}

/**
 * A data path outside the core authenticated the first packet on the keypair of local index
 * `index`: if that was the responder's waiting session, it is confirmed now (as in
 * {@link completeData}), which completes the handshake and lets staged packets go.
 */
export function firstPacketElsewhere(device: Device, index: number): void {
  const entry = device.indexTable.lookup(index);
  const keypair = entry?.keypair;
  if (!entry || !keypair) return;
  const peer = entry.peer;
  const confirmed = peer.keypairs.receivedWith(keypair);
  if (!confirmed) return;
  for (const dropped of confirmed) device.releaseKeypair(peer, dropped);
  handshakeCompleted(device, peer);
  sendStaged(device, peer);
}
