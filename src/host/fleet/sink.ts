// Where the fleet's changes land. FleetSink is the seam: the watcher speaks it, and
// DaemonFleetSink turns each edge's change into one change of the daemon's reconfiguration
// queue (src/host/reconfigure.ts), the one path every source of change takes: validated, then
// applied all or nothing, routes included (netlink, exactly the difference). One edge changed
// is one peer section in one change, so its cost does not grow with the fleet.
//
// Conflicts are checked in the queue, at the change's turn, against the peers the device has
// then (from the file, `wg set` or the fleet): a public key that is another peer's, or an
// allowed IP overlapping another peer's (containing it, equal, or inside it), refuses the
// change whole.
import type { Device } from "../../core/device.js";
import { formatCidr } from "../../core/ipaddr.js";
import type { Peer } from "../../core/peer.js";
import { constants } from "node:os";
import { resolveEndpoint } from "../config.js";
import { shortKey } from "../log.js";
import {
  FLEET_SOURCE,
  ReconfigurationError,
  type ChangeSource,
  type ChangeSummary,
  type ConfigChange,
  type PeerChange,
  type PeerOwner,
} from "../reconfigure.js";
import { edgeAllowedIps, maskAddress, type EdgeRecord, type Prefix } from "./records.js";

export type FleetConflictKind = "public_key" | "allowed_ips";

export { FLEET_SOURCE };

/** An edge the running set of peers cannot take; nothing of it was applied. */
export class FleetConflictError extends ReconfigurationError {
  constructor(
    readonly kind: FleetConflictKind,
    message: string,
  ) {
    super("ERR_RECONFIGURE_CONFLICT", message, -EEXIST);
  }
}

export interface FleetSink {
  /**
   * Puts `edge` in place of `previous` (null: the edge is new). All or nothing: on a conflict
   * it throws FleetConflictError and what ran before stays as it was.
   */
  upsertPeer(edge: EdgeRecord, previous: EdgeRecord | null): Promise<void>;
  removePeer(edge: EdgeRecord): Promise<void>;
}

/**
 * What the sink needs of the daemon: its device (read only, at the change's turn) and its
 * reconfiguration queue, which takes a change built when its turn comes.
 */
export interface FleetDaemon {
  readonly device: Device;
  reconfigure(
    change: ConfigChange | (() => ConfigChange),
    source: ChangeSource,
  ): Promise<ChangeSummary>;
}

const ZERO_KEY = new Uint8Array(32);
const { EEXIST } = constants.errno;

/**
 * FleetSink over a daemon's reconfiguration queue. The peers it put in are the fleet's: the
 * daemon lets no other source change or remove them (see Daemon.reconfigure), and peers of
 * other sources are never touched by it.
 */
export class DaemonFleetSink implements FleetSink {
  /** Public key (base64) → edge name, for the peers this sink put in. */
  private readonly edgeOfKey = new Map<string, string>();

  constructor(private readonly daemon: FleetDaemon) {}

  /** The fleet's claim on its peers, for the daemon's queue (attached as `peerOwner`). */
  readonly peerOwner: PeerOwner = {
    source: FLEET_SOURCE,
    owns: (publicKeyBase64) => this.edgeOfKey.has(publicKeyBase64),
    describe: (publicKeyBase64) => `fleet edge ${this.edgeOfKey.get(publicKeyBase64) ?? "?"}`,
  };

  async upsertPeer(edge: EdgeRecord, previous: EdgeRecord | null): Promise<void> {
    // Resolved before the change is queued: a name that does not resolve refuses it.
    const endpoint = edge.endpoint ? await resolveEndpoint(edge.endpoint) : null;
    const key = edge.publicKey.toString("base64");
    const previousKey = previous?.publicKey.toString("base64") ?? null;
    await this.apply(
      () => {
        this.check(edge, previousKey);
        const peers: PeerChange[] = [];
        if (previousKey !== null && previousKey !== key && this.edgeOfKey.has(previousKey)) {
          // A new key is a new peer: the old one's sessions cannot carry over.
          peers.push(removal(previous!.publicKey));
        }
        peers.push({
          publicKey: edge.publicKey,
          remove: false,
          updateOnly: false,
          presharedKey: edge.presharedKey ?? ZERO_KEY,
          ...(endpoint ? { endpoint } : {}),
          persistentKeepalive: edge.persistentKeepalive,
          replaceAllowedIps: true,
          allowedIps: edgeAllowedIps(edge),
        });
        return { replacePeers: false, peers };
      },
      () => {
        // Claimed at the change's turn, before it applies, so that no other source's change
        // queued behind it can see the peer unowned; given back if the change is refused.
        const undo = this.claim(key, edge.name, previousKey);
        return undo;
      },
    );
  }

  async removePeer(edge: EdgeRecord): Promise<void> {
    const key = edge.publicKey.toString("base64");
    await this.apply(
      () => ({
        replacePeers: false,
        peers: this.edgeOfKey.get(key) === edge.name ? [removal(edge.publicKey)] : [],
      }),
      () => {
        if (this.edgeOfKey.get(key) !== edge.name) return () => {};
        this.edgeOfKey.delete(key);
        return () => this.edgeOfKey.set(key, edge.name);
      },
    );
  }

  /**
   * Runs one change through the queue. `claim` updates the ownership record when the change's
   * turn comes and returns how to undo that; a refusal (a FleetConflictError from the check, or
   * any other ReconfigurationError) undoes it.
   */
  private async apply(build: () => ConfigChange, claim: () => () => void): Promise<void> {
    let undo: (() => void) | null = null;
    try {
      await this.daemon.reconfigure(() => {
        const change = build();
        undo = claim();
        return change;
      }, FLEET_SOURCE);
    } catch (error) {
      (undo as (() => void) | null)?.();
      throw error;
    }
  }

  private claim(key: string, name: string, previousKey: string | null): () => void {
    const hadPrevious = previousKey !== null ? this.edgeOfKey.get(previousKey) : undefined;
    if (previousKey !== null && previousKey !== key) this.edgeOfKey.delete(previousKey);
    this.edgeOfKey.set(key, name);
    return () => {
      this.edgeOfKey.delete(key);
      if (previousKey !== null && hadPrevious !== undefined) {
        this.edgeOfKey.set(previousKey, hadPrevious);
      }
    };
  }

  /**
   * Throws FleetConflictError when `edge` (replacing the edge whose key is `previousKey`)
   * cannot be taken by the device as it is now. Costs the edge's prefixes times the address
   * bits, whatever the number of peers.
   */
  private check(edge: EdgeRecord, previousKey: string | null): void {
    const device = this.daemon.device;
    const key = edge.publicKey.toString("base64");
    const holder = this.edgeOfKey.get(key);
    if (device.peer(edge.publicKey) && holder !== edge.name) {
      throw new FleetConflictError(
        "public_key",
        `public key ${shortKey(key)} already belongs to ${holder !== undefined ? `edge ${holder}` : "a peer not from the fleet (configuration file or wg set)"}`,
      );
    }
    const allowed = edgeAllowedIps(edge);
    // The edge's own prefixes (its current key's and the key it replaces) are no conflict.
    const isSelf = (peer: Peer) =>
      peer.publicKeyBase64 === key || peer.publicKeyBase64 === previousKey;
    for (const prefix of allowed) {
      const clash = device.allowedIps.firstOverlap(prefix.address, prefix.cidr, isSelf);
      if (clash) {
        const owner = this.edgeOfKey.get(clash.value.publicKeyBase64);
        throw new FleetConflictError(
          "allowed_ips",
          `allowed IP ${formatCidr(prefix.address, prefix.cidr)} overlaps ${formatCidr(clash.address, clash.cidr)} of ${owner !== undefined ? `edge ${owner}` : `peer ${shortKey(clash.value.publicKeyBase64)} (not from the fleet)`}`,
        );
      }
    }
    // Two prefixes of the edge itself must not overlap either (at most 65 of them).
    allowed.forEach((prefix, i) => {
      for (const other of allowed.slice(0, i)) {
        if (overlaps(prefix, other)) {
          throw new FleetConflictError(
            "allowed_ips",
            `allowed IP ${formatCidr(prefix.address, prefix.cidr)} overlaps another of the same edge`,
          );
        }
      }
    });
  }
}

function removal(publicKey: Uint8Array): PeerChange {
  return { publicKey, remove: true, updateOnly: false, replaceAllowedIps: false, allowedIps: [] };
}

/** One prefix contains the other. */
function overlaps(a: Prefix, b: Prefix): boolean {
  if (a.address.length !== b.address.length) return false;
  const cidr = Math.min(a.cidr, b.cidr);
  return Buffer.from(maskAddress(a.address, cidr)).equals(maskAddress(b.address, cidr));
}
