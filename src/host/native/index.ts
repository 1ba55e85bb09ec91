// The native addon's typed wrappers, one module per native concern; this index is the one
// import the rest of the host needs.
export * from "./addon.js";
export * from "./endpoint-record.js";
export * from "./batch.js";
export * from "./poll.js";
export * from "./tun.js";
export * from "./udp.js";
export * from "./aead.js";
export * from "./netlink.js";
export * from "./cookie-gate.js";
export * from "./lane.js";
export * from "./dataplane.js";
export * from "./link-events.js";
export * from "./x25519.js";
