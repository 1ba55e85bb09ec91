/**
 * Why a packet was dropped: the one table of reasons. The core counts each under its name
 * (nothing received from the network throws), the metrics export them as
 * `edgetun_dropped_packets_total{reason}` and sum the handshake failures, and the log's drop
 * summary warns about the local ones (this node ran out of room) while the rest, bad or
 * stale input, stay at debug.
 */

export interface DropReasonInfo {
  /** "network": bad, stale or unwanted input; "local": this node ran out of room. */
  readonly origin: "network" | "local";
  /** A handshake message refused: counted in edgetun_handshake_failures_total. */
  readonly handshakeFailure: boolean;
  readonly meaning: string;
}

function network(meaning: string, handshakeFailure = false): DropReasonInfo {
  return { origin: "network", handshakeFailure, meaning };
}

function local(meaning: string, handshakeFailure = false): DropReasonInfo {
  return { origin: "local", handshakeFailure, meaning };
}

// `cookie_required` is no handshake failure (under load the sender retries with the cookie),
// nor is `handshake_abandoned`, which counts the packets that waited for a handshake.
export const DROP_REASON_TABLE = {
  bad_length: network("a message whose length does not fit its type"),
  unknown_type: network("a message of no known type (or non-zero reserved bytes)"),
  bad_mac1: network("a handshake message whose mac1 is not for this interface", true),
  cookie_required: network("a handshake under load without a valid mac2: a cookie reply went"),
  rate_limited: network("a handshake message over its source's rate", true),
  no_identity: network("traffic while the interface has no private key"),
  handshake_decryption_failed: network("a handshake message that did not decrypt", true),
  unknown_peer: network("an initiation from a public key that is no peer", true),
  handshake_replay: network("an initiation whose timestamp is not newer than the last", true),
  handshake_flood: network("an initiation too soon after the peer's last one", true),
  unexpected_handshake: network("a response to no initiation in flight", true),
  unknown_index: network("a message for a receiver index this interface does not hold"),
  bad_cookie_reply: network("a cookie reply that did not decrypt", true),
  key_expired: network("data on a keypair past its lifetime"),
  counter_too_large: network("data whose counter is past Reject-After-Messages"),
  decryption_failed: network("data that did not authenticate"),
  replayed: network("data whose counter was seen already or is behind the window"),
  bad_inner_packet: network("an inner packet that is not IPv4 or IPv6 of its stated length"),
  source_not_allowed: network("an inner packet whose source is not in its peer's allowed IPs"),
  no_route: network("a tunnel packet to an address no peer's allowed IPs cover"),
  no_endpoint: network("a packet for a peer whose endpoint is not known yet"),
  queue_full: local("a packet waiting for a session, dropped past the queue's bound"),
  handshake_queue_full: local("a handshake message that found the handshake queue full", true),
  handshake_stale: local(
    "a handshake message that waited longer than Rekey-Timeout to be taken: its sender has moved on",
    true,
  ),
  handshake_over_share: local(
    "a handshake message dropped unread: handshakes arrived faster than taken in, and its source had had its share of the turn",
    true,
  ),
  handshake_abandoned: local("a waiting packet given up with a handshake that never completed"),
  slow_path_full: local(
    "a datagram the native receive path handed to the JS path found its queue full",
  ),
} as const satisfies Record<string, DropReasonInfo>;

export type DropReason = keyof typeof DROP_REASON_TABLE;

/** Every reason, in the table's order. */
export const DROP_REASONS = Object.keys(DROP_REASON_TABLE) as readonly DropReason[];

/** The reasons that are a handshake message refused: together, the failed handshakes. */
export const HANDSHAKE_FAILURE_REASONS: readonly DropReason[] = DROP_REASONS.filter(
  (reason) => DROP_REASON_TABLE[reason].handshakeFailure,
);

export function isDropReason(name: string): name is DropReason {
  return Object.hasOwn(DROP_REASON_TABLE, name);
}

/** One counter per reason, all zero. */
export function newDropCounters(): Record<DropReason, number> {
  return Object.fromEntries(DROP_REASONS.map((reason) => [reason, 0])) as Record<
    DropReason,
    number
  >;
}
