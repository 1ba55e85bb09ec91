import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  EndpointFormatError,
  endpointOf,
  formatEndpoint,
  parseEndpoint,
  sameEndpoint,
} from "../../src/core/endpoint.js";
import { EdgetunError } from "../../src/core/errors.js";

describe("endpoints", () => {
  it("tells numeric addresses from host names", () => {
    expect(parseEndpoint("192.0.2.1:51820", { names: true })).toEqual({
      kind: "address",
      endpoint: { address: "192.0.2.1", port: 51820 },
    });
    expect(parseEndpoint("hub.example.net:51820", { names: true })).toEqual({
      kind: "name",
      name: "hub.example.net",
      port: 51820,
    });
    expect(() => parseEndpoint("hub.example.net:51820", { names: false })).toThrow(
      EndpointFormatError,
    );
  });

  it("keeps IPv6 zones apart from the address and prints them one way", () => {
    const spec = parseEndpoint("[FE80:0::1%eth0]:7", { names: false });
    expect(spec).toEqual({
      kind: "address",
      endpoint: { address: "fe80::1", port: 7, zone: "eth0" },
    });
    if (spec.kind !== "address") throw new Error("not an address");
    expect(formatEndpoint(spec.endpoint)).toBe("[fe80::1%eth0]:7");
    expect(formatEndpoint({ address: "fe80::1", port: 7, zone: "3" })).toBe("[fe80::1%3]:7");
    expect(formatEndpoint({ address: "fd00::1", port: 7 })).toBe("[fd00::1]:7");
    expect(formatEndpoint({ address: "192.0.2.1", port: 7 })).toBe("192.0.2.1:7");
    expect(endpointOf("fe80::1%eth1", 9)).toEqual({ address: "fe80::1", port: 9, zone: "eth1" });
    // An IPv4 address has no zone.
    expect(endpointOf("192.0.2.1", 9, "eth0")).toEqual({ address: "192.0.2.1", port: 9 });
  });

  it("port 0 only where asked for", () => {
    expect(() => parseEndpoint("192.0.2.1:0", { names: false })).toThrow(/from 1 to 65535/);
    expect(parseEndpoint("192.0.2.1:0", { names: false, portZero: true }).kind).toBe("address");
    expect(() => parseEndpoint("192.0.2.1:65536", { names: false, portZero: true })).toThrow(
      EdgetunError,
    );
  });

  it("compares address, port and zone", () => {
    const a = { address: "fe80::1", port: 1, zone: "2" };
    expect(sameEndpoint(null, a)).toBe(false);
    expect(sameEndpoint(a, { ...a })).toBe(true);
    expect(sameEndpoint(a, { ...a, zone: "3" })).toBe(false);
    expect(sameEndpoint(a, { address: "fe80::1", port: 1 })).toBe(false);
    expect(sameEndpoint({ address: "10.0.0.1", port: 1 }, { address: "10.0.0.1", port: 2 })).toBe(
      false,
    );
  });

  it("prints what it parses and reads back what it prints", () => {
    const v4 = fc.tuple(...Array.from({ length: 4 }, () => fc.integer({ min: 0, max: 255 })));
    const address = fc.oneof(
      v4.map((octets) => octets.join(".")),
      fc.ipV6(),
    );
    fc.assert(
      fc.property(address, fc.integer({ min: 0, max: 65535 }), (text, port) => {
        const endpoint = endpointOf(text, port);
        const printed = formatEndpoint(endpoint);
        const spec = parseEndpoint(printed, { names: false, portZero: true });
        expect(spec).toEqual({ kind: "address", endpoint });
        expect(formatEndpoint(endpoint)).toBe(printed);
      }),
      { numRuns: 500 },
    );
  });

  it("throws nothing but EndpointFormatError on any text", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 50 }), fc.boolean(), (text, names) => {
        try {
          parseEndpoint(text, { names });
        } catch (error) {
          if (!(error instanceof EndpointFormatError)) throw error;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
