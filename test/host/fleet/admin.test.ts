// The operator's fleet commands against a real etcd: 50 concurrent adds get 50 distinct
// addresses, the printed config is one wg-quick can read, remove frees the address, list and
// export read the store, list with the last handshakes the hubs reported (their status records
// go when their lease ends); the `edgetun fleet` command line itself, with its errors.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeKey, generatePrivateKey, publicKeyOf } from "../../../src/core/keys.js";
import { parseCidr } from "../../../src/core/ipaddr.js";
import { parseConfig } from "../../../src/host/config.js";
import {
  FleetAdminError,
  addEdge,
  exportPeers,
  formatFleet,
  freeAddresses,
  readFleet,
  removeEdge,
} from "../../../src/host/fleet/admin.js";
import { EtcdError, parseStoreUrl, type EtcdClient } from "../../../src/host/fleet/etcd.js";
import {
  formatHubRecord,
  formatHubStatus,
  hubKey,
  statusKey,
} from "../../../src/host/fleet/records.js";
import { TestEtcd, etcdUnavailableReason } from "../../support/etcd.js";

const skip = etcdUnavailableReason();
if (skip) console.warn(`fleet command tests skipped: ${skip}`);
const cli = new URL("../../../dist/src/cli/main.js", import.meta.url).pathname;
const buildMissing = existsSync(cli) ? null : "needs the build (npm run build)";

let prefixCounter = 0;
const newPrefix = () => `/a${process.pid}x${prefixCounter++}`;
const hubPublicKey = publicKeyOf(generatePrivateKey());

async function recordHub(client: EtcdClient, prefix: string): Promise<void> {
  await client.put(
    hubKey(prefix, "hub1"),
    formatHubRecord({
      publicKey: decodeKey(hubPublicKey),
      endpoints: [{ kind: "address", endpoint: { address: "192.0.2.1", port: 51820 } }],
      subnet: parseCidr("10.99.0.0/24"),
      address: parseCidr("10.99.0.1").address,
      allowedIps: [parseCidr("10.99.0.0/24"), parseCidr("10.244.0.0/16")],
    }),
  );
}

function edgetun(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const fullEnv: Record<string, string | undefined> = { ...process.env, ...env };
  delete fullEnv.EDGETUN_FLEET;
  if (env.EDGETUN_FLEET) fullEnv.EDGETUN_FLEET = env.EDGETUN_FLEET;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], {
      env: fullEnv,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

describe("store URLs and address allocation (no etcd needed)", () => {
  it("parses etcd:// and etcds:// URLs and refuses the rest clearly", () => {
    expect(parseStoreUrl("etcd://127.0.0.1:2379/edgetun/prod")).toEqual({
      host: "127.0.0.1",
      port: 2379,
      prefix: "/edgetun/prod",
      tls: false,
    });
    expect(parseStoreUrl("etcds://[::1]:2379/f/").tls).toBe(true);
    for (const bad of [
      "http://x:1/p",
      "etcd://x:1",
      "etcd://user:secret@x:1/p",
      "etcd://x:1/p?x=1",
      "etcd://x:1/p q",
    ]) {
      expect(() => parseStoreUrl(bad)).toThrow(EtcdError);
    }
  });

  it("hands out the lowest free host addresses, never the network or broadcast address", () => {
    const subnet = parseCidr("10.0.0.0/29");
    const taken = new Set(["10.0.0.1", "10.0.0.3"]);
    expect(freeAddresses(subnet, taken, 10).map((a) => a.join("."))).toEqual([
      "10.0.0.2",
      "10.0.0.4",
      "10.0.0.5",
      "10.0.0.6",
    ]);
  });
});

describe.skipIf(skip !== null)("fleet commands with a real etcd", () => {
  let etcd: TestEtcd;
  let client: EtcdClient;

  beforeAll(async () => {
    etcd = await TestEtcd.create();
    client = etcd.client();
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await etcd?.cleanup();
  });

  it("gives 50 concurrent adds 50 distinct addresses", async () => {
    const prefix = newPrefix();
    await recordHub(client, prefix);
    // Each add has its own client (its own connections), as 50 operators' commands would.
    const clients = Array.from({ length: 50 }, () => etcd.client());
    try {
      const added = await Promise.all(
        clients.map((c, i) =>
          addEdge(c, prefix, { name: `edge${i}`, podCidrs: [parseCidr(`10.244.${i}.0/24`)] }),
        ),
      );
      const addresses = added.map((a) => a.edge.tunnelAddress.join("."));
      expect(new Set(addresses).size).toBe(50);
      expect(addresses).not.toContain("10.99.0.1"); // the hub's
      expect(addresses).not.toContain("10.99.0.0");
      // They raced for the same first address: most lost a transaction and tried again.
      expect(added.filter((a) => a.retries > 0).length).toBeGreaterThan(0);
      const contents = await readFleet(client, prefix);
      expect(contents.edges).toHaveLength(50);
      expect(contents.malformed).toEqual([]);
      const leases = await client.rangePrefix(`${prefix}/leases/`);
      expect(leases.kvs).toHaveLength(50);
      for (const kv of leases.kvs) {
        const name = kv.value.toString();
        const edge = contents.edges.find((e) => e.name === name)!;
        expect(kv.key.endsWith(`/${edge.tunnelAddress.join(".")}`)).toBe(true);
      }
      // Each printed config parses as a wg-quick file with the hub as its one peer.
      for (const a of added) {
        const config = parseConfig(a.config, "edge.conf");
        expect(config.addresses[0]!.text).toBe(`${a.edge.tunnelAddress.join(".")}/24`);
        expect(config.peers).toHaveLength(1);
        expect(config.peers[0]!.publicKey.toString("base64")).toBe(hubPublicKey);
        expect(config.peers[0]!.presharedKey).toBeNull();
        expect(publicKeyOf(config.privateKey!.toString("base64"))).toBe(
          a.edge.publicKey.toString("base64"),
        );
      }
    } finally {
      for (const c of clients) c.close();
    }
  }, 60_000);

  it("adds with a given key, refuses a second add of a name, lists with last handshakes, removes and reuses the address", async () => {
    const prefix = newPrefix();
    await expect(addEdge(client, prefix, { name: "e1", podCidrs: [] })).rejects.toMatchObject({
      code: "ERR_FLEET_NO_HUB",
    });
    await recordHub(client, prefix);
    const key = publicKeyOf(generatePrivateKey());
    const first = await addEdge(client, prefix, { name: "e1", podCidrs: [], publicKey: key });
    expect(first.privateKey).toBeNull();
    expect(first.config).toContain(`# PrivateKey = the private key whose public key is ${key}`);
    expect(first.edge.tunnelAddress.join(".")).toBe("10.99.0.2");
    await expect(addEdge(client, prefix, { name: "e1", podCidrs: [] })).rejects.toBeInstanceOf(
      FleetAdminError,
    );
    const second = await addEdge(client, prefix, {
      name: "e2",
      podCidrs: [parseCidr("10.244.7.0/24")],
      storePresharedKey: true,
      persistentKeepalive: 25,
    });
    expect(second.edge.presharedKey).not.toBeNull();
    expect(second.config).toContain(
      `PresharedKey = ${second.edge.presharedKey!.toString("base64")}`,
    );
    // A hub's status record, under a lease as hubs write it: e1 shook hands 42 s ago.
    const now = Math.floor(Date.now() / 1000);
    const status = formatHubStatus({
      publicKey: decodeKey(hubPublicKey),
      updated: now - 3,
      handshakes: new Map([["e1", now - 42]]),
    });
    await client.put(statusKey(prefix, "hub1"), status, await client.grantLease(5));
    const list = formatFleet(await readFleet(client, prefix), now);
    expect(list).toMatch(/^hub\s+hub1\s.*\(reported 3 s ago\)/m);
    expect(list).toMatch(
      new RegExp(
        `^edge\\s+e1\\s+${key.replace(/[+/]/g, "\\$&")}\\s+10\\.99\\.0\\.2\\s+42 s ago\\s`,
        "m",
      ),
    );
    expect(list).toMatch(/^edge\s+e2\s+\S+\s+10\.99\.0\.3\s+-\s+10\.244\.7\.0\/24$/m);
    // A malformed status is listed as such, never applied; the lease takes the good one away.
    await client.put(`${prefix}/status/hub2`, '{"handshakes": {"e1": -1}}');
    expect((await readFleet(client, prefix)).malformed.map((m) => m.key)).toEqual([
      `${prefix}/status/hub2`,
    ]);
    await client.delete(`${prefix}/status/hub2`);
    const deadline = Date.now() + 20_000;
    while ((await readFleet(client, prefix)).statuses.length > 0) {
      if (Date.now() > deadline) throw new Error("the status lease did not end");
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(formatFleet(await readFleet(client, prefix), now)).toMatch(
      /^hub\s+hub1\s.*\(no report\)/m,
    );
    const exported = parseConfig(
      `[Interface]\nPrivateKey = ${generatePrivateKey()}\n${exportPeers(await readFleet(client, prefix))}`,
      "hub.conf",
    );
    expect(exported.peers.map((p) => p.allowedIps.length)).toEqual([1, 2]);
    expect(exported.peers[1]!.persistentKeepalive).toBe(25);
    await removeEdge(client, prefix, "e1");
    await expect(removeEdge(client, prefix, "e1")).rejects.toMatchObject({
      code: "ERR_FLEET_UNKNOWN",
    });
    const third = await addEdge(client, prefix, { name: "e3", podCidrs: [] });
    expect(third.edge.tunnelAddress.join(".")).toBe("10.99.0.2");
  });

  it.skipIf(buildMissing !== null)(
    "edgetun fleet add/list/remove/export from the command line, store from EDGETUN_FLEET",
    async () => {
      const prefix = newPrefix();
      await recordHub(client, prefix);
      const env = { EDGETUN_FLEET: etcd.url(prefix) };
      const add = await edgetun(["fleet", "add", "cli1", "--pod-cidr", "10.244.9.0/24"], env);
      expect(add.stderr).toBe("");
      expect(add.status).toBe(0);
      expect(parseConfig(add.stdout, "cli1.conf").peers[0]!.allowedIps).toHaveLength(2);
      const list = await edgetun(["fleet", "list", "--store", etcd.url(prefix)]);
      expect(list.stdout).toMatch(/^edge\s+cli1\s/m);
      const exported = await edgetun(["fleet", "export"], env);
      expect(exported.stdout).toContain("AllowedIPs = 10.99.0.2/32, 10.244.9.0/24");
      expect((await edgetun(["fleet", "remove", "cli1"], env)).status).toBe(0);
      const again = await edgetun(["fleet", "remove", "cli1"], env);
      expect(again.status).toBe(1);
      expect(again.stderr).toBe("edgetun: no edge cli1 in the fleet\n");
      const noStore = await edgetun(["fleet", "list"]);
      expect(noStore.status).toBe(1);
      expect(noStore.stderr).toMatch(/no store: give --store/);
      const down = await edgetun(["fleet", "list", "--store", "etcd://127.0.0.1:1/x"]);
      expect(down.status).toBe(1);
      expect(down.stderr).toMatch(/^edgetun: etcd at 127\.0\.0\.1:1 is unreachable: ECONNREFUSED/);
      const badName = await edgetun(["fleet", "add", "Bad Name"], env);
      expect(badName.status).toBe(1);
      expect(badName.stderr).toMatch(/invalid name/);
    },
    60_000,
  );
});
