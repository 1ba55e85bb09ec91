// The fleet client over TLS with a client certificate, as etcd deployments run it: Debian's
// etcd with --client-cert-auth, certificates made here with openssl. Without the client
// certificate etcd refuses the connection; with it, reads and writes work.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient, parseStoreUrl } from "../../../src/host/fleet/etcd.js";
import { commandExists } from "../../support/netns.js";

const skip = !commandExists("etcd")
  ? "needs etcd (Debian's etcd-server)"
  : !commandExists("openssl")
    ? "needs openssl to make certificates"
    : null;
if (skip) console.warn(`fleet TLS test skipped: ${skip}`);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

describe.skipIf(skip !== null)("fleet store over TLS with client certificates", () => {
  const dir = mkdtempSync(join(tmpdir(), "edgetun-etcd-tls-"));
  const file = (name: string) => join(dir, name);
  let etcd: ChildProcess | null = null;
  let port = 0;

  const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  const issue = (name: string, extensions: string) => {
    openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      file(`${name}.key`),
      "-subj",
      `/CN=${name}`,
      "-out",
      file(`${name}.csr`),
    ]);
    writeFileSync(file(`${name}.ext`), extensions);
    openssl([
      "x509",
      "-req",
      "-in",
      file(`${name}.csr`),
      "-CA",
      file("ca.crt"),
      "-CAkey",
      file("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      file(`${name}.ext`),
      "-out",
      file(`${name}.crt`),
    ]);
  };

  beforeAll(async () => {
    openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      file("ca.key"),
      "-subj",
      "/CN=test-etcd-ca",
      "-days",
      "2",
      "-out",
      file("ca.crt"),
    ]);
    // etcd's JSON gateway calls its own gRPC server with the server certificate: with
    // --client-cert-auth that certificate must allow client authentication too (kubeadm's do).
    issue("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
    issue("client", "extendedKeyUsage=clientAuth\n");
    port = await freePort();
    const peerPort = await freePort();
    etcd = spawn(
      "etcd",
      [
        "--data-dir",
        file("data"),
        "--listen-client-urls",
        `https://127.0.0.1:${port}`,
        "--advertise-client-urls",
        `https://127.0.0.1:${port}`,
        "--listen-peer-urls",
        `http://127.0.0.1:${peerPort}`,
        "--initial-advertise-peer-urls",
        `http://127.0.0.1:${peerPort}`,
        "--initial-cluster",
        `default=http://127.0.0.1:${peerPort}`,
        "--cert-file",
        file("server.crt"),
        "--key-file",
        file("server.key"),
        "--client-cert-auth",
        "--trusted-ca-file",
        file("ca.crt"),
        "--log-level",
        "error",
      ],
      { stdio: "ignore" },
    );
    const client = tlsClient(true);
    const deadline = Date.now() + 20_000;
    try {
      while (true) {
        try {
          await client.get("/probe");
          return;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    } finally {
      client.close();
    }
  }, 40_000);

  afterAll(() => {
    if (etcd?.pid && etcd.exitCode === null) process.kill(etcd.pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  const tlsClient = (withCertificate: boolean) =>
    new EtcdClient(parseStoreUrl(`etcds://127.0.0.1:${port}/fleet`), {
      ca: readFileSync(file("ca.crt")),
      ...(withCertificate
        ? { cert: readFileSync(file("client.crt")), key: readFileSync(file("client.key")) }
        : {}),
    });

  it("reads and writes with the client certificate, and is refused without it", async () => {
    const client = tlsClient(true);
    try {
      await client.put("/fleet/edges/x", "{}");
      expect((await client.get("/fleet/edges/x"))?.value.toString()).toBe("{}");
    } finally {
      client.close();
    }
    const anonymous = tlsClient(false);
    try {
      await expect(anonymous.get("/fleet/edges/x")).rejects.toMatchObject({
        code: "ERR_STORE_UNREACHABLE",
      });
    } finally {
      anonymous.close();
    }
  });
});
