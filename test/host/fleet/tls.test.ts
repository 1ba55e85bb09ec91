// The fleet client over TLS with a client certificate, as etcd deployments run it: Debian's
// etcd with --client-cert-auth, certificates made with openssl (test/support/etcd.ts). Without
// the client certificate etcd refuses the connection; with it, reads and writes work.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient, parseStoreUrl } from "../../../src/host/fleet/etcd.js";
import { TestEtcd, etcdUnavailableReason } from "../../support/etcd.js";
import { commandExists } from "../../support/netns.js";

const skip =
  etcdUnavailableReason() ??
  (commandExists("openssl") ? null : "needs openssl to make certificates");
if (skip) console.warn(`fleet TLS test skipped: ${skip}`);

describe.skipIf(skip !== null)("fleet store over TLS with client certificates", () => {
  let etcd: TestEtcd;

  beforeAll(async () => {
    etcd = await TestEtcd.create({ tls: true });
  }, 40_000);

  afterAll(async () => {
    await etcd?.cleanup();
  });

  it("reads and writes with the client certificate, and is refused without it", async () => {
    const url = etcd.url("/fleet");
    expect(url).toMatch(/^etcds:\/\//);
    const client = new EtcdClient(parseStoreUrl(url), etcd.tlsFiles());
    try {
      await client.put("/fleet/edges/x", "{}");
      expect((await client.get("/fleet/edges/x"))?.value.toString()).toBe("{}");
    } finally {
      client.close();
    }
    const anonymous = new EtcdClient(parseStoreUrl(url), etcd.tlsFiles(false));
    try {
      await expect(anonymous.get("/fleet/edges/x")).rejects.toMatchObject({
        code: "ERR_STORE_UNREACHABLE",
      });
    } finally {
      anonymous.close();
    }
  });
});
