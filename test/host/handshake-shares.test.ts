// Fair shares of a backlogged handshake turn: a flooding source is cut to its share, others
// keep theirs, and nothing is dropped without a backlog.
import { describe, expect, it } from "vitest";
import {
  HANDSHAKES_PER_SOURCE_PER_TURN,
  HandshakeShares,
} from "../../src/host/handshake-shares.js";
import { ENDPOINT_SIZE, writeEndpoint } from "../../src/host/native/index.js";

function records(addresses: Array<[string, number]>): Uint8Array {
  const table = new Uint8Array(addresses.length * ENDPOINT_SIZE);
  addresses.forEach(([address, port], i) => writeEndpoint(table, i, { address, port }));
  return table;
}

function admitted(shares: HandshakeShares, table: Uint8Array, count: number): number[] {
  const yes: number[] = [];
  for (let i = 0; i < count; i++) if (shares.admit(table, i)) yes.push(i);
  return yes;
}

describe("HandshakeShares", () => {
  it("admits everything while there is no backlog", () => {
    const shares = new HandshakeShares();
    const table = records(Array.from({ length: 50 }, (_, i) => ["192.0.2.1", 1000 + i]));
    shares.beginTurn(false);
    expect(admitted(shares, table, 50)).toHaveLength(50);
  });

  it("gives each source its share of a backlogged turn, whatever ports it uses", () => {
    const shares = new HandshakeShares();
    const flood: Array<[string, number]> = Array.from({ length: 60 }, (_, i) => [
      "198.51.100.7",
      2000 + i,
    ]);
    // The joining peer's one initiation comes last, behind the whole flood.
    const table = records([...flood, ["192.0.2.9", 51820]]);
    shares.beginTurn(true);
    const yes = admitted(shares, table, 61);
    expect(yes).toEqual([
      ...Array.from({ length: HANDSHAKES_PER_SOURCE_PER_TURN }, (_, i) => i),
      60,
    ]);
    // A new turn starts the count again.
    shares.beginTurn(true);
    expect(admitted(shares, table, 61)).toHaveLength(HANDSHAKES_PER_SOURCE_PER_TURN + 1);
  });

  it("keys IPv6 sources by their /64, so one subscriber cannot multiply its share", () => {
    const shares = new HandshakeShares();
    const table = records([
      ["2001:db8:1:2::1", 1],
      ["2001:db8:1:2::2", 1],
      ["2001:db8:1:2:ffff::3", 1],
      ["2001:db8:1:2::4", 1],
      ["2001:db8:1:2::5", 1],
      ["2001:db8:1:3::1", 1],
    ]);
    shares.beginTurn(true);
    expect(admitted(shares, table, 6)).toEqual([0, 1, 2, 3, 5]);
  });
});
