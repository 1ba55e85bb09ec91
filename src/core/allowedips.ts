/**
 * Allowed IPs: the longest-prefix-match table that does cryptokey routing. Going out, the
 * destination address of a packet picks the peer; coming in, the inner source address must map
 * back to the peer whose key decrypted it.
 *
 * One path-compressed binary trie per address family. A node exists for each stored prefix and
 * for each point where two stored prefixes diverge (a "branch" node without a value), so the
 * trie has fewer than 2n nodes and a lookup visits at most one node per address bit, in
 * practice a handful. Lookups on the data path read the address straight out of the packet
 * and allocate nothing.
 */

import { IPV4_ADDRESS_BYTES, IPV6_ADDRESS_BYTES } from "./ipaddr.js";

const IPV4_BITS = 32;
const IPV6_BITS = 128;

/**
 * An address or prefix as four big-endian 32-bit words (IPv4 uses only the first), kept as
 * int32 because that is what JS bit operators produce and compare against.
 */
type AddressWords = Int32Array;

class PrefixNode<T> {
  // The prefix, masked to `cidr`, and the mask itself, as plain fields rather than a typed
  // array so the lookup loop reads them without an extra indirection.
  readonly key0: number;
  readonly key1: number;
  readonly key2: number;
  readonly key3: number;
  readonly mask0: number;
  readonly mask1: number;
  readonly mask2: number;
  readonly mask3: number;
  readonly cidr: number;
  readonly addressBits: number;
  // Where in the raw address the bit that picks a child lives (bit number `cidr`). A node of
  // full length has no children; pointing it at byte 0 keeps every read inside the address.
  readonly branchByte: number;
  readonly branchShift: number;
  // A separate flag so that a branch node is told apart without relying on T excluding
  // undefined.
  hasValue = false;
  value: T | undefined = undefined;
  parent: PrefixNode<T> | null = null;
  child0: PrefixNode<T> | null = null;
  child1: PrefixNode<T> | null = null;

  constructor(words: AddressWords, cidr: number, addressBits: number) {
    this.cidr = cidr;
    this.addressBits = addressBits;
    this.mask0 = wordMask(cidr, 0);
    this.mask1 = wordMask(cidr, 1);
    this.mask2 = wordMask(cidr, 2);
    this.mask3 = wordMask(cidr, 3);
    this.key0 = words[0]! & this.mask0;
    this.key1 = words[1]! & this.mask1;
    this.key2 = words[2]! & this.mask2;
    this.key3 = words[3]! & this.mask3;
    this.branchByte = cidr === addressBits ? 0 : cidr >>> 3;
    this.branchShift = 7 - (cidr & 7);
  }

  keyWord(index: number): number {
    switch (index) {
      case 0:
        return this.key0;
      case 1:
        return this.key1;
      case 2:
        return this.key2;
      default:
        return this.key3;
    }
  }

  /** Whether this node's whole prefix matches `words` (which may be longer). */
  coversWords(words: AddressWords): boolean {
    return (
      (((words[0]! ^ this.key0) & this.mask0) |
        ((words[1]! ^ this.key1) & this.mask1) |
        ((words[2]! ^ this.key2) & this.mask2) |
        ((words[3]! ^ this.key3) & this.mask3)) ===
      0
    );
  }
}

export class AllowedIps<T> {
  #rootV4: PrefixNode<T> | null = null;
  #rootV6: PrefixNode<T> | null = null;
  // Per value (peer), its prefixes: removing a peer or listing its allowed IPs for `wg show`
  // then costs its own prefix count, not a walk over every peer's routes.
  readonly #nodesByValue = new Map<T, Set<PrefixNode<T>>>();
  #size = 0;
  #nodeCount = 0;
  /**
   * Told of every prefix that gets a value (new or changed) or loses it: for a copy of the
   * table kept elsewhere (the native receive path), at the cost of the change.
   */
  onChange: ((address: Uint8Array, cidr: number, value: T | undefined) => void) | null = null;

  /** Number of prefixes stored. */
  get size(): number {
    return this.#size;
  }

  /**
   * Trie nodes held, prefixes plus branch points: at most 2 × size - 1 per family while the
   * trie stays minimal. For memory metrics, and for tests that check nothing leaks.
   */
  get nodeCount(): number {
    return this.#nodeCount;
  }

  /**
   * Maps the prefix to `value`, replacing the value of an identical prefix. Host bits beyond
   * `cidr` are ignored, as the kernel does for "10.0.0.1/8".
   */
  insert(address: Uint8Array, cidr: number, value: T): void {
    const addressBits = checkedAddressBits(address, cidr);
    const words = prefixWords(address, cidr);

    let parent: PrefixNode<T> | null = null;
    let branch = 0;
    let node = this.#root(addressBits);
    while (node !== null && node.cidr <= cidr && node.coversWords(words)) {
      if (node.cidr === cidr) {
        this.#assign(node, value);
        return;
      }
      parent = node;
      branch = bitOfWords(words, node.cidr);
      node = branch === 0 ? node.child0 : node.child1;
    }

    const leaf = new PrefixNode<T>(words, cidr, addressBits);
    this.#nodeCount++;
    this.#assign(leaf, value);
    if (node === null) {
      this.#attach(parent, branch, leaf);
      return;
    }
    // `node` sits where the new prefix belongs but is not a prefix of it. Both agree with
    // `parent` up to and including its branch bit, so they diverge strictly below it.
    const common = commonPrefixLength(node, words, Math.min(node.cidr, cidr));
    if (common === cidr) {
      // The new prefix contains `node`: it goes in between.
      setChild(leaf, bitOfNode(node, cidr), node);
      this.#attach(parent, branch, leaf);
    } else {
      // They split at bit `common`: a branch node there holds both.
      const split = new PrefixNode<T>(words, common, addressBits);
      this.#nodeCount++;
      setChild(split, bitOfWords(words, common), leaf);
      setChild(split, bitOfNode(node, common), node);
      this.#attach(parent, branch, split);
    }
  }

  /** Removes the prefix only if it maps to `value`; returns whether it did. */
  remove(address: Uint8Array, cidr: number, value: T): boolean {
    const addressBits = checkedAddressBits(address, cidr);
    const words = prefixWords(address, cidr);
    let node = this.#root(addressBits);
    while (node !== null && node.cidr < cidr && node.coversWords(words)) {
      node = bitOfWords(words, node.cidr) === 0 ? node.child0 : node.child1;
    }
    if (
      node === null ||
      node.cidr !== cidr ||
      !node.coversWords(words) ||
      !node.hasValue ||
      node.value !== value
    ) {
      return false;
    }
    this.#removeNode(node);
    return true;
  }

  /**
   * The value stored for exactly this prefix (not the longest match): whether a prefix is
   * in the table at all, which is what decides whether it needs a route.
   */
  exact(address: Uint8Array, cidr: number): T | undefined {
    const addressBits = checkedAddressBits(address, cidr);
    const words = prefixWords(address, cidr);
    let node = this.#root(addressBits);
    while (node !== null && node.cidr < cidr && node.coversWords(words)) {
      node = bitOfWords(words, node.cidr) === 0 ? node.child0 : node.child1;
    }
    if (node === null || node.cidr !== cidr || !node.coversWords(words) || !node.hasValue) {
      return undefined;
    }
    return node.value;
  }

  /**
   * A stored prefix that overlaps the given one (contains it, equals it, or lies inside it)
   * and whose value `ignore` does not accept; undefined when there is none. Walks one path
   * down the trie, then below the given prefix only as far as the ignored values' own nodes
   * (a minimal trie has a value at every leaf), so it costs address bits plus those nodes.
   */
  firstOverlap(
    address: Uint8Array,
    cidr: number,
    ignore: (value: T) => boolean,
  ): { address: Uint8Array; cidr: number; value: T } | undefined {
    const addressBits = checkedAddressBits(address, cidr);
    const words = prefixWords(address, cidr);
    const found = (node: PrefixNode<T>) => ({
      address: addressBytes(node),
      cidr: node.cidr,
      value: node.value as T,
    });
    let node = this.#root(addressBits);
    // Prefixes containing (or equal to) the given one lie on its path.
    while (node !== null && node.cidr <= cidr && node.coversWords(words)) {
      if (node.hasValue && !ignore(node.value as T)) return found(node);
      if (node.cidr === cidr) break;
      node = bitOfWords(words, node.cidr) === 0 ? node.child0 : node.child1;
    }
    // Prefixes inside it: the subtrie under the first node longer than it that it covers.
    if (node === null || node.cidr < cidr || commonPrefixLength(node, words, cidr) < cidr) {
      return undefined;
    }
    const pending: PrefixNode<T>[] = node.cidr === cidr ? [] : [node];
    if (node.cidr === cidr) {
      if (node.child0) pending.push(node.child0);
      if (node.child1) pending.push(node.child1);
    }
    while (pending.length > 0) {
      const next = pending.pop()!;
      if (next.hasValue && !ignore(next.value as T)) return found(next);
      if (next.child0) pending.push(next.child0);
      if (next.child1) pending.push(next.child1);
    }
    return undefined;
  }

  /** Removes every prefix that maps to `value` (a peer being removed or replacing its IPs). */
  removeByValue(value: T): void {
    const nodes = this.#nodesByValue.get(value);
    if (nodes === undefined) {
      return;
    }
    for (const node of [...nodes]) {
      this.#removeNode(node);
    }
  }

  /** The value of the longest prefix containing `address` (4 or 16 bytes). */
  lookup(address: Uint8Array): T | undefined {
    if (address.length === IPV4_ADDRESS_BYTES) {
      return this.lookupV4(address, 0);
    }
    if (address.length === IPV6_ADDRESS_BYTES) {
      return this.lookupV6(address, 0);
    }
    throw new RangeError(`an IP address is 4 or 16 bytes, not ${address.length}`);
  }

  /** Longest-prefix match on the IPv4 address at `packet[offset..offset+4)`. Data path. */
  lookupV4(packet: Uint8Array, offset: number): T | undefined {
    if (!(offset >>> 0 === offset && offset + IPV4_ADDRESS_BYTES <= packet.length)) {
      throw new RangeError(`no IPv4 address at offset ${offset} of ${packet.length} bytes`);
    }
    const word0 = readWord(packet, offset);
    let best: PrefixNode<T> | null = null;
    let node = this.#rootV4;
    // Path compression skips bits, so each node checks its whole prefix; once one fails, no
    // node below it (all longer prefixes of it) can match either.
    while (node !== null && ((word0 ^ node.key0) & node.mask0) === 0) {
      if (node.hasValue) {
        best = node;
      }
      node =
        ((packet[offset + node.branchByte]! >>> node.branchShift) & 1) === 0
          ? node.child0
          : node.child1;
    }
    return best === null ? undefined : best.value;
  }

  /** Longest-prefix match on the IPv6 address at `packet[offset..offset+16)`. Data path. */
  lookupV6(packet: Uint8Array, offset: number): T | undefined {
    if (!(offset >>> 0 === offset && offset + IPV6_ADDRESS_BYTES <= packet.length)) {
      throw new RangeError(`no IPv6 address at offset ${offset} of ${packet.length} bytes`);
    }
    const word0 = readWord(packet, offset);
    const word1 = readWord(packet, offset + 4);
    const word2 = readWord(packet, offset + 8);
    const word3 = readWord(packet, offset + 12);
    let best: PrefixNode<T> | null = null;
    let node = this.#rootV6;
    while (
      node !== null &&
      (((word0 ^ node.key0) & node.mask0) |
        ((word1 ^ node.key1) & node.mask1) |
        ((word2 ^ node.key2) & node.mask2) |
        ((word3 ^ node.key3) & node.mask3)) ===
        0
    ) {
      if (node.hasValue) {
        best = node;
      }
      node =
        ((packet[offset + node.branchByte]! >>> node.branchShift) & 1) === 0
          ? node.child0
          : node.child1;
    }
    return best === null ? undefined : best.value;
  }

  /** How many prefixes map to `value`. */
  countFor(value: T): number {
    return this.#nodesByValue.get(value)?.size ?? 0;
  }

  /**
   * The prefixes mapping to `value`, host bits zero, in address order: IPv4 before IPv6, then
   * by address, then shorter prefix first. The order depends only on the set of prefixes, not
   * on the history of inserts, so `wg show` output and tests are reproducible.
   */
  entriesFor(value: T): Array<{ address: Uint8Array; cidr: number }> {
    const nodes = this.#nodesByValue.get(value);
    if (nodes === undefined) {
      return [];
    }
    return [...nodes].sort(compareNodes).map((node) => ({
      address: addressBytes(node),
      cidr: node.cidr,
    }));
  }

  clear(): void {
    if (this.onChange) {
      for (const nodes of this.#nodesByValue.values()) {
        for (const node of nodes) this.onChange(addressBytes(node), node.cidr, undefined);
      }
    }
    this.#rootV4 = null;
    this.#rootV6 = null;
    this.#nodesByValue.clear();
    this.#size = 0;
    this.#nodeCount = 0;
  }

  #root(addressBits: number): PrefixNode<T> | null {
    return addressBits === IPV4_BITS ? this.#rootV4 : this.#rootV6;
  }

  /** Puts `node` in the slot its parent has for it, or at the root of its family. */
  #attach(parent: PrefixNode<T> | null, branch: number, node: PrefixNode<T>): void {
    if (parent === null) {
      this.#setRoot(node.addressBits, node);
    } else {
      setChild(parent, branch, node);
    }
  }

  #setRoot(addressBits: number, node: PrefixNode<T> | null): void {
    if (node !== null) {
      node.parent = null;
    }
    if (addressBits === IPV4_BITS) {
      this.#rootV4 = node;
    } else {
      this.#rootV6 = node;
    }
  }

  #assign(node: PrefixNode<T>, value: T): void {
    if (node.hasValue) {
      if (node.value === value) {
        return;
      }
      this.#unindex(node);
    } else {
      node.hasValue = true;
      this.#size++;
    }
    node.value = value;
    this.onChange?.(addressBytes(node), node.cidr, value);
    let nodes = this.#nodesByValue.get(value);
    if (nodes === undefined) {
      nodes = new Set();
      this.#nodesByValue.set(value, nodes);
    }
    nodes.add(node);
  }

  #unindex(node: PrefixNode<T>): void {
    const value = node.value as T;
    const nodes = this.#nodesByValue.get(value);
    if (nodes !== undefined) {
      nodes.delete(node);
      if (nodes.size === 0) {
        this.#nodesByValue.delete(value);
      }
    }
  }

  #removeNode(node: PrefixNode<T>): void {
    this.onChange?.(addressBytes(node), node.cidr, undefined);
    this.#unindex(node);
    node.hasValue = false;
    node.value = undefined;
    this.#size--;
    this.#prune(node);
  }

  /**
   * Keeps the trie minimal after `node` lost its value: a valueless node is only worth keeping
   * while two subtries branch at it.
   */
  #prune(node: PrefixNode<T>): void {
    if (node.hasValue || (node.child0 !== null && node.child1 !== null)) {
      return;
    }
    const onlyChild = node.child0 ?? node.child1;
    const parent = node.parent;
    this.#replace(node, onlyChild);
    // A leaf going away leaves its parent with one child; if that parent was only a branch
    // point, it has to go too. (A node with one child going away does not change the
    // parent's child count, so this never cascades further.)
    if (onlyChild === null && parent !== null) {
      this.#prune(parent);
    }
  }

  #replace(node: PrefixNode<T>, replacement: PrefixNode<T> | null): void {
    const parent = node.parent;
    if (parent === null) {
      this.#setRoot(node.addressBits, replacement);
    } else {
      setChild(parent, parent.child0 === node ? 0 : 1, replacement);
    }
    node.parent = null;
    node.child0 = null;
    node.child1 = null;
    this.#nodeCount--;
  }
}

function setChild<T>(parent: PrefixNode<T>, branch: number, child: PrefixNode<T> | null): void {
  if (branch === 0) {
    parent.child0 = child;
  } else {
    parent.child1 = child;
  }
  if (child !== null) {
    child.parent = parent;
  }
}

function checkedAddressBits(address: Uint8Array, cidr: number): number {
  let addressBits: number;
  if (address.length === IPV4_ADDRESS_BYTES) {
    addressBits = IPV4_BITS;
  } else if (address.length === IPV6_ADDRESS_BYTES) {
    addressBits = IPV6_BITS;
  } else {
    throw new RangeError(`an IP address is 4 or 16 bytes, not ${address.length}`);
  }
  if (!Number.isInteger(cidr) || cidr < 0 || cidr > addressBits) {
    throw new RangeError(`prefix length ${cidr} is outside 0..${addressBits}`);
  }
  return addressBits;
}

/** The first `prefixBits` bits (0..32) of 32-bit word `index` of a prefix of length `cidr`. */
function wordMask(cidr: number, index: number): number {
  const prefixBits = Math.min(Math.max(cidr - index * 32, 0), 32);
  // `<< 32` is `<< 0` in JS, so an empty mask has to be spelled out.
  return prefixBits === 0 ? 0 : -1 << (32 - prefixBits);
}

function readWord(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset]! << 24) |
    (bytes[offset + 1]! << 16) |
    (bytes[offset + 2]! << 8) |
    bytes[offset + 3]!
  );
}

function prefixWords(address: Uint8Array, cidr: number): AddressWords {
  const words = new Int32Array(4);
  for (let i = 0; i < address.length / 4; i++) {
    words[i] = readWord(address, i * 4) & wordMask(cidr, i);
  }
  return words;
}

function bitOfWords(words: AddressWords, bit: number): number {
  return (words[bit >>> 5]! >>> (31 - (bit & 31))) & 1;
}

function bitOfNode<T>(node: PrefixNode<T>, bit: number): number {
  return (node.keyWord(bit >>> 5) >>> (31 - (bit & 31))) & 1;
}

/** How many leading bits `node`'s key and `words` share, at most `limit`. */
function commonPrefixLength<T>(node: PrefixNode<T>, words: AddressWords, limit: number): number {
  for (let i = 0; i < 4; i++) {
    const difference = node.keyWord(i) ^ words[i]!;
    if (difference !== 0) {
      return Math.min(i * 32 + Math.clz32(difference), limit);
    }
  }
  return limit;
}

function addressBytes<T>(node: PrefixNode<T>): Uint8Array {
  const bytes = new Uint8Array(node.addressBits / 8);
  for (let i = 0; i < bytes.length / 4; i++) {
    const word = node.keyWord(i);
    bytes[i * 4] = word >>> 24;
    bytes[i * 4 + 1] = word >>> 16;
    bytes[i * 4 + 2] = word >>> 8;
    bytes[i * 4 + 3] = word;
  }
  return bytes;
}

function compareNodes<T>(a: PrefixNode<T>, b: PrefixNode<T>): number {
  if (a.addressBits !== b.addressBits) {
    return a.addressBits - b.addressBits;
  }
  for (let i = 0; i < 4; i++) {
    // Unsigned, so that 128.0.0.0 sorts after 127.0.0.0.
    const difference = (a.keyWord(i) >>> 0) - (b.keyWord(i) >>> 0);
    if (difference !== 0) {
      return difference;
    }
  }
  return a.cidr - b.cidr;
}
