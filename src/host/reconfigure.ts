/**
 * Reconfiguration: the one path by which a running interface changes.
 *
 * Every source of change builds a {@link ConfigChange} and hands it to one serial queue per
 * interface ({@link Reconfigurer.apply}, reached as `Daemon.reconfigure(change, source)`):
 * - `wg set` and `wg syncconf` through the control socket (src/host/uapi.ts parses the request
 *   into a change);
 * - a reload (SIGHUP) and `edgetun syncconf` (the file is diffed against the running state by
 *   {@link changeFromConfig}, so unchanged peers are not in the change at all);
 * - the fleet store, one change per record it sees change.
 *
 * A change is validated completely, then applied all or nothing, in this order: the fwmark,
 * a new listen port (bound beside the old socket), the new routes (one netlink batch), then
 * the device's peers, then the routes no longer needed go. Each step that can fail comes before
 * anything that cannot be taken back, so a refused change (a port in use, a route already
 * there) leaves the interface exactly as it was, and the error says which step refused.
 *
 * Cost is proportional to the change: a change naming one peer among 5,000 looks at that
 * peer's prefixes only, and installs or removes only the routes of prefixes that start or stop
 * being allowed (to any peer; a prefix moving between peers keeps its route).
 *
 * For callers such as the fleet store: build a change with one {@link PeerChange} per peer
 * record (`replaceAllowedIps: true` and the full list of allowed IPs makes it an upsert;
 * `remove: true` removes), `replacePeers: false`, and await `daemon.reconfigure(change,
 * "fleet")`, or pass a function that builds it at its turn (to check it against the device as
 * it is then). It rejects with a {@link ReconfigurationError} (stable `code`, negative `errno`)
 * and then nothing changed.
 *
 * Sources that own their peers ({@link PeerOwner}: the fleet) are protected from the others by
 * {@link respectOwners}, which the daemon applies to every change at its turn.
 */
import { constants } from "node:os";
import { PrivateKey } from "../core/crypto.js";
import type { Device } from "../core/device.js";
import { formatCidr } from "../core/ipaddr.js";
import type { Endpoint } from "../core/endpoint.js";
import { EdgetunError } from "../core/errors.js";
import type { Peer } from "../core/peer.js";
import type { InterfaceFileConfig } from "./config.js";
import type { Logger } from "./log.js";

const { EINVAL, EIO } = constants.errno;
const KEY_BYTES = 32;

export interface Prefix {
  /** 4 or 16 bytes; host bits beyond `cidr` are ignored. */
  readonly address: Uint8Array;
  readonly cidr: number;
}

/** One peer's part of a change, as the control protocol's peer section defines it. */
export interface PeerChange {
  readonly publicKey: Uint8Array;
  /** Remove the peer; the other fields are then ignored. */
  readonly remove: boolean;
  /** Change the peer only if it exists; never create it. */
  readonly updateOnly: boolean;
  /** All zeros: no pre-shared key. Absent: unchanged. */
  readonly presharedKey?: Uint8Array;
  /** Absent: unchanged. */
  readonly endpoint?: Endpoint;
  /** Seconds, 0 off. Absent: unchanged. */
  readonly persistentKeepalive?: number;
  /** The peer's allowed IPs become exactly `allowedIps`; otherwise these are added. */
  readonly replaceAllowedIps: boolean;
  readonly allowedIps: readonly Prefix[];
}

/** A validated change of a running interface: the device fields given, then each peer. */
export interface ConfigChange {
  /** null clears the key (the device then does nothing). Absent: unchanged. */
  readonly privateKey?: Uint8Array | null;
  readonly listenPort?: number;
  readonly fwmark?: number;
  /** Remove every peer first (`wg setconf`). */
  readonly replacePeers: boolean;
  readonly peers: readonly PeerChange[];
}

/** Who asked for a change, for the log: "up", "wg set", "reload", "syncconf", "fleet". */
export type ChangeSource = string;

/** The fleet store's changes: one per edge, thousands at a hub's start, logged at debug. */
export const FLEET_SOURCE: ChangeSource = "fleet";

export type ReconfigurationErrorCode =
  | "ERR_RECONFIGURE_INVALID"
  | "ERR_RECONFIGURE_LISTEN_PORT"
  | "ERR_RECONFIGURE_FWMARK"
  | "ERR_RECONFIGURE_ROUTES"
  | "ERR_RECONFIGURE_OWNED"
  | "ERR_RECONFIGURE_CONFLICT"
  | "ERR_RECONFIGURE_FAILED";

/** A refused change; the interface is as it was before it. */
export class ReconfigurationError extends EdgetunError {
  declare readonly code: ReconfigurationErrorCode;

  constructor(
    code: ReconfigurationErrorCode,
    message: string,
    /** Negative errno, as the control socket reports it. */
    readonly errno: number,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** A socket bound for a new listen port beside the current one. */
export interface PendingListenPort {
  /** Makes it the socket in use and closes the old one. Cannot fail. */
  commit(): void;
  /** Closes it; the old socket stays. */
  abort(): void;
}

/** Route side of a change (src/host/netif.ts InterfaceSetup), absent where there is none. */
export interface RouteKeeper {
  plan(
    appearing: Iterable<Prefix>,
    disappearing: Iterable<Prefix>,
    fwmark: number,
  ): { add: Prefix[]; remove: Prefix[]; needsFwmark: number | null };
  /** All or nothing; throws (with nothing installed) when the kernel refuses a route. */
  install(plan: { add: Prefix[]; remove: Prefix[] }, fwmark: number): void;
  /** Cannot fail: refusals are logged. */
  retire(plan: { add: Prefix[]; remove: Prefix[] }): void;
}

/** What the reconfiguration queue needs from the daemon around the device. */
export interface ReconfigurationHost {
  readonly device: Device;
  listenPort(): number;
  /** Binds `port` without giving up the current socket; throws an Error with `code`. */
  prepareListenPort(port: number): PendingListenPort | Promise<PendingListenPort>;
  fwmark(): number;
  /** May throw an Error with `code`. */
  setFwmark(mark: number): void;
  readonly routes?: RouteKeeper | null;
  /** After a change applied: send what it queued (a keepalive, say). */
  afterChange?(): void;
}

/** What an applied change did, for the log and for callers that want to know. */
export interface ChangeSummary {
  peersAdded: number;
  peersRemoved: number;
  peersChanged: number;
  routesAdded: number;
  routesRemoved: number;
}

// ---------------------------------------------------------------------------------------
// Validation

/** Throws ERR_RECONFIGURE_INVALID for anything the device would not take. */
export function validateChange(change: ConfigChange): void {
  const invalid = (message: string) =>
    new ReconfigurationError("ERR_RECONFIGURE_INVALID", message, -EINVAL);
  if (change.privateKey && change.privateKey.length !== KEY_BYTES) {
    throw invalid("a private key is 32 bytes");
  }
  if (change.listenPort !== undefined && !isInteger(change.listenPort, 0, 0xffff)) {
    throw invalid(`listen port ${change.listenPort} is not 0 to 65535`);
  }
  if (change.fwmark !== undefined && !isInteger(change.fwmark, 0, 0xffffffff)) {
    throw invalid(`fwmark ${change.fwmark} is not a 32-bit number`);
  }
  for (const peer of change.peers) {
    if (peer.publicKey.length !== KEY_BYTES) throw invalid("a public key is 32 bytes");
    if (peer.remove) continue;
    if (peer.presharedKey && peer.presharedKey.length !== KEY_BYTES) {
      throw invalid("a pre-shared key is 32 bytes");
    }
    if (peer.persistentKeepalive !== undefined && !isInteger(peer.persistentKeepalive, 0, 0xffff)) {
      throw invalid(`persistent keepalive ${peer.persistentKeepalive} is not 0 to 65535`);
    }
    if (peer.endpoint && !isInteger(peer.endpoint.port, 0, 0xffff)) {
      throw invalid(`endpoint port ${peer.endpoint.port} is not 0 to 65535`);
    }
    for (const prefix of peer.allowedIps) {
      const bits = prefix.address.length * 8;
      if ((bits !== 32 && bits !== 128) || !isInteger(prefix.cidr, 0, bits)) {
        throw invalid("an allowed IP is an IPv4 or IPv6 prefix");
      }
    }
  }
}

function isInteger(value: number, min: number, max: number): boolean {
  return Number.isInteger(value) && value >= min && value <= max;
}

// ---------------------------------------------------------------------------------------
// Planning: which prefixes start and stop being allowed, without touching the device

/** Whether `a` and `b` are one prefix, host bits aside. */
function samePrefix(a: Prefix, b: Prefix): boolean {
  if (a.cidr !== b.cidr || a.address.length !== b.address.length) return false;
  const whole = a.cidr >>> 3;
  for (let i = 0; i < whole; i++) if (a.address[i] !== b.address[i]) return false;
  const rest = a.cidr & 7;
  const mask = (0xff00 >>> rest) & 0xff;
  return rest === 0 || (a.address[whole]! & mask) === (b.address[whole]! & mask);
}

/** Whether a prefix is listed twice (host bits aside). */
function hasRepeatedPrefix(prefixes: readonly Prefix[]): boolean {
  if (prefixes.length <= 8) {
    for (let i = 0; i < prefixes.length; i++) {
      for (let j = i + 1; j < prefixes.length; j++) {
        if (samePrefix(prefixes[i]!, prefixes[j]!)) return true;
      }
    }
    return false;
  }
  return new Set(prefixes.map((prefix) => masked(prefix).text)).size !== prefixes.length;
}

/**
 * The change without the replacements of allowed IPs that would leave them as they are: `wg
 * syncconf` sends every peer of the file with replace_allowed_ips, and a peer whose prefixes
 * are exactly those it has (and that no other section of the change names) then costs one
 * lookup per prefix instead of a removal and an insertion. Anything less plain is kept.
 */
export function withoutUnchangedAllowedIps(device: Device, change: ConfigChange): ConfigChange {
  if (change.replacePeers) return change;
  // wg syncconf sends the private key too; only a new key (peers may then go) keeps it all.
  const running = device.identity?.privateKey.raw;
  if (
    change.privateKey !== undefined &&
    !(change.privateKey && running && Buffer.from(running).equals(change.privateKey))
  ) {
    return change;
  }
  // One trie lookup per prefix, no text: which peer owns each prefix now. A section whose
  // prefixes are all its own peer's, and all of them, may go; but not if its peer appears in
  // another section, or another section names one of its prefixes (the replacement would take
  // that prefix back, so it changes something).
  const sectionPeers = change.peers.map((section) => device.peer(section.publicKey));
  const sections = new Map<Peer, number>();
  const namedElsewhere = new Set<Peer>();
  const unchanged = change.peers.map((section, i) => {
    const peer = sectionPeers[i];
    if (peer) sections.set(peer, (sections.get(peer) ?? 0) + 1);
    let allOwn = peer !== undefined && !section.remove;
    for (const prefix of section.allowedIps) {
      const owner = device.allowedIps.exact(prefix.address, prefix.cidr);
      if (owner !== peer) {
        allOwn = false;
        if (owner) namedElsewhere.add(owner);
      }
    }
    return (
      allOwn &&
      section.replaceAllowedIps &&
      device.allowedIps.countFor(peer!) === section.allowedIps.length &&
      !hasRepeatedPrefix(section.allowedIps)
    );
  });
  let dropped = 0;
  const peers = change.peers.map((section, i) => {
    const peer = sectionPeers[i];
    if (!unchanged[i] || !peer || sections.get(peer) !== 1 || namedElsewhere.has(peer)) {
      return section;
    }
    dropped++;
    return { ...section, replaceAllowedIps: false, allowedIps: [] };
  });
  return dropped === 0 ? change : { ...change, peers };
}

/** The prefix with host bits cleared, and its text ("10.1.0.0/16"). */
function masked(prefix: Prefix): { prefix: Prefix; text: string } {
  const address = Uint8Array.from(prefix.address);
  for (let bit = prefix.cidr; bit < address.length * 8; bit++) {
    address[bit >>> 3] = address[bit >>> 3]! & ~(0x80 >>> (bit & 7));
  }
  return { prefix: { address, cidr: prefix.cidr }, text: formatCidr(address, prefix.cidr) };
}

/**
 * Replays a change over the prefixes it touches, the way {@link applyToDevice} will apply it,
 * and returns the prefixes that appear in and disappear from the allowed IPs as a whole.
 */
export function planPrefixes(
  device: Device,
  change: ConfigChange,
): { appearing: Prefix[]; disappearing: Prefix[] } {
  const touched = new Map<string, Prefix>();
  /** Peers whose prefixes in the device no longer count (removed, or replacing theirs). */
  const cleared = new Set<string>();
  const removed = new Set<string>();
  const added = new Set<string>();
  /** Touched prefix → owner after the change (null: none), overriding the device. */
  const owners = new Map<string, string | null>();
  const ownedInChange = new Map<string, Set<string>>();

  const exists = (key: string) => added.has(key) || (device.peers.has(key) && !removed.has(key));
  const ownerOf = (text: string, prefix: Prefix): string | null => {
    const override = owners.get(text);
    if (override !== undefined) return override;
    const peer = device.allowedIps.exact(prefix.address, prefix.cidr);
    if (!peer || cleared.has(peer.publicKeyBase64)) return null;
    return peer.publicKeyBase64;
  };
  const clear = (key: string) => {
    const peer = device.peers.get(key);
    if (peer && !cleared.has(key)) {
      for (const entry of device.allowedIps.entriesFor(peer)) {
        const { prefix, text } = masked(entry);
        touched.set(text, prefix);
      }
    }
    cleared.add(key);
    for (const text of ownedInChange.get(key) ?? []) owners.set(text, null);
    ownedInChange.delete(key);
  };
  const insert = (key: string, prefixes: readonly Prefix[]) => {
    for (const entry of prefixes) {
      const { prefix, text } = masked(entry);
      touched.set(text, prefix);
      const previous = owners.get(text);
      if (previous) ownedInChange.get(previous)?.delete(text);
      owners.set(text, key);
      let set = ownedInChange.get(key);
      if (!set) ownedInChange.set(key, (set = new Set()));
      set.add(text);
    }
  };
  const removePeer = (key: string) => {
    clear(key);
    removed.add(key);
    added.delete(key);
  };

  let ownPublicKey = device.publicKey;
  if (change.privateKey !== undefined) {
    ownPublicKey = change.privateKey ? new PrivateKey(change.privateKey).publicKey : null;
    const own = ownPublicKey?.toString("base64");
    if (own && exists(own)) removePeer(own);
  }
  if (change.replacePeers) for (const key of device.peers.keys()) removePeer(key);
  for (const section of change.peers) {
    if (ownPublicKey?.equals(section.publicKey)) continue;
    const key = Buffer.from(section.publicKey).toString("base64");
    if (section.remove) {
      if (exists(key)) removePeer(key);
      continue;
    }
    if (exists(key)) {
      if (section.replaceAllowedIps) clear(key);
      insert(key, section.allowedIps);
    } else if (!section.updateOnly) {
      added.add(key);
      insert(key, section.allowedIps);
    }
  }

  const appearing: Prefix[] = [];
  const disappearing: Prefix[] = [];
  for (const [text, prefix] of touched) {
    const before = device.allowedIps.exact(prefix.address, prefix.cidr) !== undefined;
    const after = ownerOf(text, prefix) !== null;
    if (after && !before) appearing.push(prefix);
    else if (before && !after) disappearing.push(prefix);
  }
  return { appearing, disappearing };
}

// ---------------------------------------------------------------------------------------
// Applying to the device (nothing here can fail for a validated change)

/** Applies a validated change to the device; returns what it did to peers. */
export function applyToDevice(
  device: Device,
  change: ConfigChange,
): Pick<ChangeSummary, "peersAdded" | "peersRemoved" | "peersChanged"> {
  const summary = { peersAdded: 0, peersRemoved: 0, peersChanged: 0 };
  if (change.privateKey !== undefined) device.setPrivateKey(change.privateKey);
  if (change.replacePeers) {
    for (const peer of [...device.peers.values()]) {
      device.removePeer(peer.publicKey);
      summary.peersRemoved++;
    }
  }
  for (const section of change.peers) {
    // A peer with our own public key is ignored, as the kernel and wireguard-go do.
    if (device.publicKey?.equals(section.publicKey)) continue;
    const existing = device.peer(section.publicKey);
    if (section.remove) {
      if (existing && device.removePeer(section.publicKey)) summary.peersRemoved++;
      continue;
    }
    const settings = {
      presharedKey: section.presharedKey,
      endpoint: section.endpoint,
      allowedIps: section.allowedIps,
      persistentKeepalive: section.persistentKeepalive,
    };
    if (existing) {
      if (section.replaceAllowedIps) device.allowedIps.removeByValue(existing);
      device.updatePeer(existing, settings);
      summary.peersChanged++;
    } else if (!section.updateOnly) {
      device.addPeer({ publicKey: section.publicKey, ...settings });
      summary.peersAdded++;
    }
  }
  return summary;
}

// ---------------------------------------------------------------------------------------
// A configuration file as a change

const ZERO_KEY = new Uint8Array(KEY_BYTES);

/**
 * The change that turns the running device into what `config` describes, the way `wg
 * syncconf` does: peers missing from the file go, new ones come, and a peer that stays appears
 * in the change only with the fields that differ (so its session and counters are kept, and an
 * unchanged peer costs nothing). Addresses and MTU are not part of a change (as with wg
 * syncconf). `endpoints[i]` is peer i's endpoint, resolved; null keeps what the peer has.
 * `keepFwmark`: the running fwmark was chosen for a default route, and a file without FwMark
 * must not take it away. Peers another source owns (the fleet store's) are kept out of the
 * change later, by {@link respectOwners}, as for every source.
 */
export function changeFromConfig(
  device: Device,
  config: Pick<InterfaceFileConfig, "privateKey" | "listenPort" | "fwmark" | "peers">,
  endpoints: ReadonlyArray<Endpoint | null>,
  current: {
    listenPort: number;
    fwmark: number;
    keepFwmark?: boolean;
  },
): ConfigChange {
  const peers: PeerChange[] = [];
  const wanted = new Set(config.peers.map((peer) => peer.publicKey.toString("base64")));
  for (const peer of device.peers.values()) {
    if (!wanted.has(peer.publicKeyBase64)) {
      peers.push({
        publicKey: peer.publicKey,
        remove: true,
        updateOnly: false,
        replaceAllowedIps: false,
        allowedIps: [],
      });
    }
  }
  config.peers.forEach((filePeer, i) => {
    const endpoint = endpoints[i] ?? null;
    const presharedKey = filePeer.presharedKey ?? ZERO_KEY;
    const existing = device.peer(filePeer.publicKey);
    if (!existing) {
      peers.push({
        publicKey: filePeer.publicKey,
        remove: false,
        updateOnly: false,
        presharedKey,
        ...(endpoint ? { endpoint } : {}),
        persistentKeepalive: filePeer.persistentKeepalive,
        replaceAllowedIps: true,
        allowedIps: filePeer.allowedIps,
      });
      return;
    }
    const difference = peerDifference(device, existing, {
      presharedKey,
      endpoint,
      persistentKeepalive: filePeer.persistentKeepalive,
      allowedIps: filePeer.allowedIps,
    });
    if (difference) peers.push({ publicKey: filePeer.publicKey, ...difference });
  });
  const change: {
    -readonly [K in keyof ConfigChange]: ConfigChange[K];
  } = { replacePeers: false, peers };
  // A file without PrivateKey leaves the running key (perhaps set by a hook) in place.
  if (
    config.privateKey !== null &&
    (!device.identity || !Buffer.from(device.identity.privateKey.raw).equals(config.privateKey))
  ) {
    change.privateKey = config.privateKey;
  }
  if (config.listenPort !== null && config.listenPort !== current.listenPort) {
    change.listenPort = config.listenPort;
  }
  if (config.fwmark !== current.fwmark && !(config.fwmark === 0 && current.keepFwmark)) {
    change.fwmark = config.fwmark;
  }
  return change;
}

/** Whether `peer`'s allowed IPs are exactly `prefixes` (as sets): a trie lookup per prefix. */
function hasAllowedIpsExactly(device: Device, peer: Peer, prefixes: readonly Prefix[]): boolean {
  if (hasRepeatedPrefix(prefixes)) {
    const current = new Set(device.allowedIps.entriesFor(peer).map((p) => masked(p).text));
    const target = new Set(prefixes.map((p) => masked(p).text));
    return current.size === target.size && [...target].every((text) => current.has(text));
  }
  return (
    device.allowedIps.countFor(peer) === prefixes.length &&
    prefixes.every((prefix) => device.allowedIps.exact(prefix.address, prefix.cidr) === peer)
  );
}

/** The fields of `existing` that differ from `wanted`, or null when none does. */
function peerDifference(
  device: Device,
  existing: Peer,
  wanted: {
    presharedKey: Uint8Array;
    endpoint: Endpoint | null;
    persistentKeepalive: number;
    allowedIps: readonly Prefix[];
  },
): Omit<PeerChange, "publicKey"> | null {
  const difference: { -readonly [K in keyof PeerChange]?: PeerChange[K] } = {};
  let differs = false;
  if (!existing.presharedKey.equals(wanted.presharedKey)) {
    difference.presharedKey = wanted.presharedKey;
    differs = true;
  }
  const endpoint = wanted.endpoint;
  if (
    endpoint &&
    (!existing.endpoint ||
      existing.endpoint.address !== endpoint.address ||
      existing.endpoint.port !== endpoint.port)
  ) {
    difference.endpoint = endpoint;
    differs = true;
  }
  if (existing.persistentKeepalive !== wanted.persistentKeepalive) {
    difference.persistentKeepalive = wanted.persistentKeepalive;
    differs = true;
  }
  const sameIps = hasAllowedIpsExactly(device, existing, wanted.allowedIps);
  if (!differs && sameIps) return null;
  return {
    ...difference,
    remove: false,
    updateOnly: false,
    replaceAllowedIps: !sameIps,
    allowedIps: sameIps ? [] : wanted.allowedIps,
  };
}

// ---------------------------------------------------------------------------------------
// Sources that own their peers

/** A source that owns the peers it puts in (the fleet store): only it changes them. */
export interface PeerOwner {
  /** The source its own changes carry ("fleet"). */
  readonly source: ChangeSource;
  owns(publicKeyBase64: string): boolean;
  /** The peer in a log line or an error ("fleet edge e1"). */
  describe(publicKeyBase64: string): string;
}

/**
 * The rule between sources of change. A peer that an owning source put in (a fleet edge) is
 * changed and removed by that source only; for a change from any other source (`wg set`, `wg
 * setconf`, `wg syncconf`, `edgetun syncconf`, a reload):
 * - `replacePeers` (`wg setconf`) replaces only the peers no owner claims (and the log says
 *   which it kept);
 * - a section naming an owned peer is left out, and the log says so: `wg syncconf` of a file
 *   that does not list the fleet's edges asks to remove each of them, and `wg set … remove`
 *   of an edge would last only until the store's next full read, so neither is done; an edge
 *   goes with `edgetun fleet remove`;
 * - a section that would give its peer an allowed IP overlapping an owned peer's refuses the
 *   whole change (the edge's traffic would go elsewhere without a word), as the fleet refuses
 *   an edge overlapping a peer of the file.
 * Cost: the change's own sections and prefixes (a `replacePeers` change walks the peers once).
 */
export function respectOwners(
  device: Device,
  change: ConfigChange,
  source: ChangeSource,
  owners: readonly PeerOwner[],
  logger: Logger | null,
): ConfigChange {
  const others = owners.filter((owner) => owner.source !== source);
  if (others.length === 0) return change;
  const ownerOf = (key: string) => others.find((owner) => owner.owns(key));
  const skipped: string[] = [];
  const peers: PeerChange[] = [];
  if (change.replacePeers) {
    for (const peer of device.peers.values()) {
      const owner = ownerOf(peer.publicKeyBase64);
      if (owner) skipped.push(owner.describe(peer.publicKeyBase64));
      else peers.push(removalOf(peer.publicKey));
    }
  }
  for (const section of change.peers) {
    const key = Buffer.from(section.publicKey).toString("base64");
    const owner = ownerOf(key);
    if (owner) {
      skipped.push(owner.describe(key));
      continue;
    }
    if (!section.remove) {
      for (const prefix of section.allowedIps) {
        const clash = device.allowedIps.firstOverlap(
          prefix.address,
          prefix.cidr,
          (peer) => peer.publicKeyBase64 === key || !ownerOf(peer.publicKeyBase64),
        );
        if (clash) {
          throw new ReconfigurationError(
            "ERR_RECONFIGURE_OWNED",
            `allowed IP ${formatCidr(prefix.address, prefix.cidr)} overlaps ${formatCidr(clash.address, clash.cidr)} of ${ownerOf(clash.value.publicKeyBase64)!.describe(clash.value.publicKeyBase64)}; change it in its store`,
            -EINVAL,
          );
        }
      }
    }
    peers.push(section);
  }
  if (skipped.length > 0) {
    logger?.warn("peers owned by another source left as they are; change them there", {
      source,
      peers: skipped.length,
      first: skipped.slice(0, 5),
    });
  }
  return { ...change, replacePeers: false, peers };
}

function removalOf(publicKey: Uint8Array): PeerChange {
  return { publicKey, remove: true, updateOnly: false, replaceAllowedIps: false, allowedIps: [] };
}

// ---------------------------------------------------------------------------------------
// The queue

/** One serial queue of changes for one interface. */
export class Reconfigurer {
  #tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly host: ReconfigurationHost,
    private readonly logger: Logger | null = null,
    private readonly interfaceName = "",
  ) {}

  /**
   * Queues `change` behind those before it and applies it all or nothing. Rejects with a
   * {@link ReconfigurationError}, the interface then unchanged.
   */
  apply(change: ConfigChange, source: ChangeSource): Promise<ChangeSummary> {
    return this.applyBuilt(() => change, source);
  }

  /**
   * Like {@link apply}, with the change built when its turn comes: a diff against the running
   * state (a reload) must see the changes queued before it.
   */
  applyBuilt(build: () => ConfigChange, source: ChangeSource): Promise<ChangeSummary> {
    const result = this.#tail.then(() => this.#run(build, source));
    // The queue goes on after a refusal.
    this.#tail = result.catch(() => undefined);
    return result;
  }

  async #run(build: () => ConfigChange, source: ChangeSource): Promise<ChangeSummary> {
    try {
      const summary = await this.#applyNow(build());
      if (source !== "up") {
        const log = source === FLEET_SOURCE ? this.logger?.debug : this.logger?.info;
        log?.call(this.logger, "configuration applied", {
          interface: this.interfaceName,
          source,
          ...summary,
        });
      }
      return summary;
    } catch (error) {
      const refusal =
        error instanceof ReconfigurationError
          ? error
          : new ReconfigurationError(
              "ERR_RECONFIGURE_FAILED",
              `applying the change failed: ${messageOf(error)}`,
              -EIO,
              { cause: error },
            );
      // The fleet logs its own refusals, naming the edge (one record among thousands).
      if (source !== "up" && source !== FLEET_SOURCE) {
        this.logger?.error("configuration change refused; the running configuration is unchanged", {
          interface: this.interfaceName,
          source,
          code: refusal.code,
          error: refusal.message,
        });
      }
      throw refusal;
    }
  }

  async #applyNow(requested: ConfigChange): Promise<ChangeSummary> {
    validateChange(requested);
    const host = this.host;
    const change = withoutUnchangedAllowedIps(host.device, requested);
    const { appearing, disappearing } = planPrefixes(host.device, change);
    const previousMark = host.fwmark();
    let mark = change.fwmark ?? previousMark;
    const routes = host.routes ?? null;
    const routePlan = routes?.plan(appearing, disappearing, mark) ?? null;
    if (routePlan?.needsFwmark) mark = routePlan.needsFwmark;

    if (mark !== previousMark) {
      try {
        host.setFwmark(mark);
      } catch (error) {
        throw hostError("ERR_RECONFIGURE_FWMARK", `fwmark ${mark}`, error);
      }
    }
    let pendingPort: PendingListenPort | null = null;
    if (change.listenPort !== undefined && change.listenPort !== host.listenPort()) {
      try {
        pendingPort = await host.prepareListenPort(change.listenPort);
      } catch (error) {
        if (mark !== previousMark) host.setFwmark(previousMark);
        throw hostError("ERR_RECONFIGURE_LISTEN_PORT", `listen port ${change.listenPort}`, error);
      }
    }
    if (routes && routePlan) {
      try {
        routes.install(routePlan, mark);
      } catch (error) {
        pendingPort?.abort();
        if (mark !== previousMark) host.setFwmark(previousMark);
        throw hostError("ERR_RECONFIGURE_ROUTES", "routes", error);
      }
    }
    pendingPort?.commit();
    const peers = applyToDevice(host.device, change);
    if (routes && routePlan) routes.retire(routePlan);
    host.afterChange?.();
    return {
      ...peers,
      routesAdded: routePlan?.add.length ?? 0,
      routesRemoved: routePlan?.remove.length ?? 0,
    };
  }
}

/** A host error ("EADDRINUSE", "EEXIST", …) as a refusal carrying the matching errno. */
function hostError(
  code: ReconfigurationErrorCode,
  what: string,
  error: unknown,
): ReconfigurationError {
  const errorCode = (error as { code?: unknown } | null)?.code;
  const ownErrno = (error as { errno?: unknown } | null)?.errno;
  const errnos = constants.errno as Record<string, number | undefined>;
  let errno = typeof errorCode === "string" ? errnos[errorCode] : undefined;
  if (errno === undefined && typeof ownErrno === "number" && ownErrno < 0) errno = -ownErrno;
  return new ReconfigurationError(code, `${what}: ${messageOf(error)}`, -(errno ?? EIO), {
    cause: error,
  });
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
