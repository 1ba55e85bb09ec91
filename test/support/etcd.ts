// A real etcd for tests and the fleet bench: Debian's etcd-server in a temporary data dir on
// random free loopback ports (plain, or TLS with client certificates made here with openssl),
// ended by its PID; or inside a test's network namespace. `stop()` and `start()` again keep
// the data and the ports, as a restarted etcd does. One place for etcd's command line.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandExists } from "./netns.js";
import { EtcdClient, type StoreLocation, type StoreTlsFiles } from "../../src/host/fleet/etcd.js";

export function etcdUnavailableReason(): string | null {
  return commandExists("etcd") ? null : "needs etcd (Debian's etcd-server, not installed)";
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** The files of a test CA, etcd's server certificate and a client certificate. */
export interface EtcdCertificates {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** Makes a CA and the server and client certificates (EC P-256, two days) in `dir` with openssl. */
export function makeEtcdCertificates(dir: string): EtcdCertificates {
  const file = (name: string) => join(dir, name);
  const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(
    ["req", "-x509", ...newKey, "-keyout", file("ca.key"), "-subj", "/CN=test-etcd-ca"].concat([
      "-days",
      "2",
      "-out",
      file("ca.crt"),
    ]),
  );
  const issue = (name: string, extensions: string) => {
    openssl(
      ["req", "-new", ...newKey, "-keyout", file(`${name}.key`), "-subj", `/CN=${name}`].concat([
        "-out",
        file(`${name}.csr`),
      ]),
    );
    writeFileSync(file(`${name}.ext`), extensions);
    openssl(
      ["x509", "-req", "-in", file(`${name}.csr`), "-CA", file("ca.crt")]
        .concat(["-CAkey", file("ca.key"), "-CAcreateserial", "-days", "2"])
        .concat(["-extfile", file(`${name}.ext`), "-out", file(`${name}.crt`)]),
    );
  };
  // etcd's JSON gateway calls its own gRPC server with the server certificate: with
  // --client-cert-auth that certificate must allow client authentication too (kubeadm's do).
  issue("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  issue("client", "extendedKeyUsage=clientAuth\n");
  return {
    ca: file("ca.crt"),
    serverCert: file("server.crt"),
    serverKey: file("server.key"),
    clientCert: file("client.crt"),
    clientKey: file("client.key"),
  };
}

/**
 * etcd's command line for a one-member cluster on 127.0.0.1: plain HTTP, or TLS with client
 * certificates required when `certificates` are given. Tests, and the bench, start etcd with
 * this and nothing else.
 */
export function etcdArguments(options: {
  dataDir: string;
  clientPort: number;
  peerPort: number;
  certificates?: EtcdCertificates | null;
  quotaBackendBytes?: number;
}): string[] {
  const tls = options.certificates ?? null;
  const client = `${tls ? "https" : "http"}://127.0.0.1:${options.clientPort}`;
  const peer = `http://127.0.0.1:${options.peerPort}`;
  return [
    ...["--name", "test", "--data-dir", options.dataDir],
    ...["--listen-client-urls", client, "--advertise-client-urls", client],
    ...["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer],
    ...["--initial-cluster", `test=${peer}`, "--log-level", "error"],
    ...(tls
      ? ["--cert-file", tls.serverCert, "--key-file", tls.serverKey, "--client-cert-auth"].concat([
          "--trusted-ca-file",
          tls.ca,
        ])
      : []),
    ...(options.quotaBackendBytes
      ? ["--quota-backend-bytes", String(options.quotaBackendBytes)]
      : []),
  ];
}

/** Until `probe` reads from etcd, or throws after `timeoutMs` (or when `gone()` says it exited). */
export async function waitForEtcd(
  probe: EtcdClient,
  gone: () => boolean = () => false,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      await probe.get("/probe");
      return;
    } catch (error) {
      if (gone() || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * etcd inside a network namespace, on that namespace's own loopback (port 2379: nobody else's,
 * gone with the namespace), for a hub that runs in the namespace; `spawnIn` starts a process
 * there (Testbed.spawn, say). Resolves once etcdctl there finds it healthy.
 */
export async function startEtcdInNamespace(
  spawnIn: (command: string, args: string[]) => ChildProcess,
  ns: string,
  dataDir: string,
  options: { quotaBackendBytes?: number } = {},
): Promise<void> {
  spawnIn("etcd", etcdArguments({ dataDir, clientPort: 2379, peerPort: 2380, ...options }));
  const deadline = Date.now() + 20_000;
  const healthy = () =>
    spawnSync(
      "ip",
      ["netns", "exec", ns, "etcdctl", "--endpoints", "127.0.0.1:2379"].concat([
        "endpoint",
        "health",
      ]),
    ).status === 0;
  while (!healthy()) {
    if (Date.now() > deadline) throw new Error(`etcd in ${ns} did not start`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

export class TestEtcd {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  readonly log: string[] = [];

  private constructor(
    /** Holds the data dir and the certificates; removed by cleanup(). */
    readonly dir: string,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly certificates: EtcdCertificates | null,
  ) {}

  /** `tls`: certificates made with openssl, client certificates required. */
  static async create(options: { tls?: boolean } = {}): Promise<TestEtcd> {
    const dir = mkdtempSync(join(tmpdir(), "edgetun-etcd-"));
    const certificates = options.tls ? makeEtcdCertificates(dir) : null;
    const etcd = new TestEtcd(dir, await freePort(), await freePort(), certificates);
    try {
      await etcd.start();
    } catch (error) {
      await etcd.cleanup();
      throw error;
    }
    return etcd;
  }

  get dataDir(): string {
    return join(this.dir, "data");
  }

  location(prefix: string): StoreLocation {
    return { host: "127.0.0.1", port: this.clientPort, prefix, tls: this.certificates !== null };
  }

  url(prefix: string): string {
    return `${this.certificates ? "etcds" : "etcd"}://127.0.0.1:${this.clientPort}${prefix}`;
  }

  /** The CA, and the client certificate unless `withCertificate` is false. */
  tlsFiles(withCertificate = true): StoreTlsFiles {
    const tls = this.certificates;
    if (!tls) return {};
    return {
      ca: readFileSync(tls.ca),
      ...(withCertificate
        ? { cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) }
        : {}),
    };
  }

  client(prefix = "/t", timeoutMs?: number): EtcdClient {
    return new EtcdClient(this.location(prefix), this.tlsFiles(), timeoutMs);
  }

  async start(): Promise<void> {
    const child = spawn(
      "etcd",
      etcdArguments({
        dataDir: this.dataDir,
        clientPort: this.clientPort,
        peerPort: this.peerPort,
        certificates: this.certificates,
      }),
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    this.child = child;
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      if (this.log.length < 200) this.log.push(chunk);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const probe = this.client();
    try {
      await waitForEtcd(probe, () => child.exitCode !== null);
    } catch (error) {
      throw new Error(`etcd did not start: ${(error as Error).message}\n${this.log.join("")}`, {
        cause: error,
      });
    } finally {
      probe.close();
    }
  }

  /** Ends etcd (by PID) and waits until it is gone; the data stays for `start()`. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await this.exited;
    this.child = null;
  }

  async cleanup(): Promise<void> {
    await this.stop("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP relay on loopback in front of etcd that can cut every connection and refuse new ones:
 * a network partition between one client and etcd, while others still reach it.
 */
export class CuttableLink {
  private readonly sockets = new Set<import("node:net").Socket>();
  private cut = false;

  private constructor(
    private readonly server: import("node:net").Server,
    readonly port: number,
  ) {}

  static async open(targetPort: number): Promise<CuttableLink> {
    const { createServer: createTcpServer, connect } = await import("node:net");
    let link: CuttableLink | null = null;
    const server = createTcpServer((socket) => {
      if (!link || link.cut) {
        socket.destroy();
        return;
      }
      const upstream = connect({ host: "127.0.0.1", port: targetPort });
      for (const s of [socket, upstream]) {
        link.sockets.add(s);
        s.on("close", () => link!.sockets.delete(s));
        s.on("error", () => {
          socket.destroy();
          upstream.destroy();
        });
      }
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    await new Promise<void>((resolve) => server.listen({ host: "127.0.0.1", port: 0 }, resolve));
    const address = server.address();
    link = new CuttableLink(server, typeof address === "object" && address ? address.port : 0);
    return link;
  }

  /** Drops every connection and refuses new ones until `restore()`. */
  sever(): void {
    this.cut = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.cut = false;
  }

  async close(): Promise<void> {
    this.sever();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
