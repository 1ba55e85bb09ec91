// Where the fleet's changes land. FleetSink is the seam: the watcher speaks it, and the
// daemon's incremental methods implement it (one edge changed touches one peer and its
// routes). Every change is checked first and then applied whole, or refused whole.
import type { Device } from "../../core/device.js";
import { formatCidr } from "../../core/ipaddr.js";
import type { Peer } from "../../core/peer.js";
import { resolveEndpoint } from "../config.js";
import { shortKey } from "../log.js";
import { EdgetunError } from "../../core/errors.js";
import { edgeAllowedIps, maskAddress, type EdgeRecord, type Prefix } from "./records.js";
import type { FleetRoutes } from "./routes.js";

export type FleetConflictKind = "public_key" | "allowed_ips";

/** A change the running set of peers cannot take; nothing of it was applied. */
export class FleetConflictError extends EdgetunError {
  constructor(
    readonly kind: FleetConflictKind,
    message: string,
  ) {
    super("ERR_FLEET_CONFLICT", message);
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

/** A prefix as a map key; IPv4 as a number (the common case, and 20 times cheaper). */
function prefixKey(address: Uint8Array, cidr: number): string {
  if (address.length === 4) {
    const value =
      ((address[0]! << 24) | (address[1]! << 16) | (address[2]! << 8) | address[3]!) >>> 0;
    const masked = cidr === 0 ? 0 : (value & (0xffffffff << (32 - cidr))) >>> 0;
    return `${masked}/${cidr}`;
  }
  return `${Buffer.from(maskAddress(address, cidr)).toString("hex")}/${cidr}`;
}

/**
 * Who holds which prefix, to answer "does this prefix overlap anyone else's?" in O(address
 * bits): a prefix overlaps another when one contains the other. Containing ones are found by
 * looking up each shorter mask of it; contained ones through a count, at every shorter mask,
 * of the prefixes below it.
 */
export class PrefixOwners {
  private readonly owners = new Map<string, string>();
  private readonly below = new Map<string, number>();

  add(prefix: Prefix, owner: string): void {
    const key = prefixKey(prefix.address, prefix.cidr);
    if (this.owners.get(key) === owner) return; // counted once, or `remove` would leave a count
    this.owners.set(key, owner);
    for (let cidr = 0; cidr < prefix.cidr; cidr++) {
      const key = prefixKey(prefix.address, cidr);
      this.below.set(key, (this.below.get(key) ?? 0) + 1);
    }
  }

  remove(prefix: Prefix, owner: string): void {
    const key = prefixKey(prefix.address, prefix.cidr);
    if (this.owners.get(key) !== owner) return;
    this.owners.delete(key);
    for (let cidr = 0; cidr < prefix.cidr; cidr++) {
      const above = prefixKey(prefix.address, cidr);
      const count = (this.below.get(above) ?? 0) - 1;
      if (count > 0) this.below.set(above, count);
      else this.below.delete(above);
    }
  }

  /** Another owner's prefix that overlaps `prefix`, as text; null when none. */
  overlap(prefix: Prefix, self: string, own: readonly Prefix[]): string | null {
    for (let cidr = 0; cidr <= prefix.cidr; cidr++) {
      const holder = this.owners.get(prefixKey(prefix.address, cidr));
      if (holder !== undefined && holder !== self) {
        return `${formatCidr(maskAddress(prefix.address, cidr), cidr)} of ${holder}`;
      }
    }
    // Narrower prefixes inside this one, less the ones `self` holds itself.
    const inside = this.below.get(prefixKey(prefix.address, prefix.cidr)) ?? 0;
    const here = prefixKey(prefix.address, prefix.cidr);
    const ownInside = new Set(
      own
        .filter(
          (p) =>
            p.address.length === prefix.address.length &&
            p.cidr > prefix.cidr &&
            prefixKey(p.address, prefix.cidr) === here &&
            this.owners.get(prefixKey(p.address, p.cidr)) === self,
        )
        .map((p) => prefixKey(p.address, p.cidr)),
    ).size;
    return inside > ownInside
      ? `a narrower prefix inside ${formatCidr(prefix.address, prefix.cidr)}`
      : null;
  }
}

/** What the sink needs of the daemon: its device, a way to send what a change queued. */
export interface FleetDaemon {
  readonly device: Device;
  flushActions(): void;
}

/**
 * FleetSink over a running daemon's incremental methods. Peers that were there before the
 * fleet (from the configuration file) are owned by "file" and never touched.
 */
export class DaemonFleetSink implements FleetSink {
  private readonly owners = new PrefixOwners();
  /** Public key (base64) → edge name, for the peers this sink put in. */
  private readonly edgeOfKey = new Map<string, string>();

  constructor(
    private readonly daemon: FleetDaemon,
    private readonly routes: FleetRoutes | null,
  ) {
    const device = daemon.device;
    for (const peer of device.peers.values()) {
      for (const prefix of device.allowedIps.entriesFor(peer)) {
        this.owners.add(prefix, `file peer ${shortKey(peer.publicKeyBase64)}`);
      }
    }
  }

  /** True for a peer this sink put in (the daemon's file reload must leave it alone). */
  ownsPeer(publicKeyBase64: string): boolean {
    return this.edgeOfKey.has(publicKeyBase64);
  }

  private ownerName(edge: EdgeRecord): string {
    return `edge ${edge.name}`;
  }

  /** Throws FleetConflictError when `edge` (replacing `previous`) cannot be taken. */
  check(edge: EdgeRecord, previous: EdgeRecord | null): void {
    const key = edge.publicKey.toString("base64");
    const holder = this.edgeOfKey.get(key);
    const isOwnKey = previous !== null && previous.publicKey.equals(edge.publicKey);
    if (!isOwnKey && (holder !== undefined || this.daemon.device.peer(edge.publicKey))) {
      throw new FleetConflictError(
        "public_key",
        `public key ${shortKey(key)} already belongs to ${holder ? `edge ${holder}` : "a peer from the configuration file"}`,
      );
    }
    const self = this.ownerName(edge);
    const allowed = edgeAllowedIps(edge);
    const own = previous ? edgeAllowedIps(previous) : [];
    for (const prefix of allowed) {
      const clash = this.owners.overlap(prefix, self, own);
      if (clash) {
        throw new FleetConflictError(
          "allowed_ips",
          `allowed IP ${formatCidr(prefix.address, prefix.cidr)} overlaps ${clash}`,
        );
      }
    }
    // Two prefixes of the edge itself must not overlap either.
    const seen = new PrefixOwners();
    for (const prefix of allowed) {
      if (seen.overlap(prefix, "", []) !== null) {
        throw new FleetConflictError(
          "allowed_ips",
          `allowed IP ${formatCidr(prefix.address, prefix.cidr)} overlaps another of the same edge`,
        );
      }
      seen.add(prefix, "self");
    }
  }

  async upsertPeer(edge: EdgeRecord, previous: EdgeRecord | null): Promise<void> {
    this.check(edge, previous);
    // Resolve before changing anything: a name that does not resolve refuses the change.
    const endpoint = edge.endpoint ? await resolveEndpoint(edge.endpoint) : null;
    const device = this.daemon.device;
    const self = this.ownerName(edge);
    const allowed = edgeAllowedIps(edge);
    const oldAllowed = previous ? edgeAllowedIps(previous) : [];
    let peer: Peer | undefined = previous ? device.peer(previous.publicKey) : undefined;
    if (peer && !peer.publicKey.equals(edge.publicKey)) {
      // A new key is a new peer: the old one's sessions cannot carry over.
      device.removePeer(peer.publicKey);
      this.edgeOfKey.delete(peer.publicKeyBase64);
      peer = undefined;
    }
    for (const prefix of oldAllowed) this.owners.remove(prefix, self);
    for (const prefix of allowed) this.owners.add(prefix, self);
    const presharedKey = edge.presharedKey ?? Buffer.alloc(32);
    if (!peer) {
      peer = device.addPeer({
        publicKey: edge.publicKey,
        presharedKey,
        endpoint,
        allowedIps: allowed,
        persistentKeepalive: edge.persistentKeepalive,
      });
      this.edgeOfKey.set(peer.publicKeyBase64, edge.name);
    } else {
      // Same key: only what differs changes, so the session survives.
      if (!peer.presharedKey.equals(presharedKey)) peer.presharedKey = presharedKey;
      if (
        endpoint &&
        (peer.endpoint?.address !== endpoint.address || peer.endpoint.port !== endpoint.port)
      ) {
        peer.endpoint = endpoint;
      }
      const wanted = new Set(allowed.map((p) => formatCidr(p.address, p.cidr)));
      for (const prefix of device.allowedIps.entriesFor(peer)) {
        if (!wanted.has(formatCidr(prefix.address, prefix.cidr))) {
          device.allowedIps.remove(prefix.address, prefix.cidr, peer);
        }
      }
      for (const prefix of allowed) device.allowedIps.insert(prefix.address, prefix.cidr, peer);
      if (peer.persistentKeepalive !== edge.persistentKeepalive) {
        device.setPersistentKeepalive(peer, edge.persistentKeepalive);
      }
    }
    this.daemon.flushActions();
    if (this.routes) {
      const had = new Set(oldAllowed.map((p) => formatCidr(p.address, p.cidr)));
      const has = new Set(allowed.map((p) => formatCidr(p.address, p.cidr)));
      this.routes.remove(oldAllowed.filter((p) => !has.has(formatCidr(p.address, p.cidr))));
      this.routes.add(allowed.filter((p) => !had.has(formatCidr(p.address, p.cidr))));
    }
  }

  async removePeer(edge: EdgeRecord): Promise<void> {
    const key = edge.publicKey.toString("base64");
    if (this.edgeOfKey.get(key) !== edge.name) return;
    this.daemon.device.removePeer(edge.publicKey);
    this.edgeOfKey.delete(key);
    const allowed = edgeAllowedIps(edge);
    for (const prefix of allowed) this.owners.remove(prefix, this.ownerName(edge));
    this.routes?.remove(allowed);
  }
}
