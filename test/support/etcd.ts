// A real etcd for tests: Debian's etcd-server in a temporary data dir on random free loopback
// ports, ended by its PID. `stop()` and `start()` again keep the data and the ports, as a
// restarted etcd does.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandExists } from "./netns.js";
import { EtcdClient, type StoreLocation } from "../../src/host/fleet/etcd.js";

export function etcdUnavailableReason(): string | null {
  return commandExists("etcd") ? null : "needs etcd (Debian's etcd-server, not installed)";
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export class TestEtcd {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  readonly log: string[] = [];

  private constructor(
    readonly dataDir: string,
    readonly clientPort: number,
    readonly peerPort: number,
  ) {}

  static async create(): Promise<TestEtcd> {
    const dir = mkdtempSync(join(tmpdir(), "edgetun-etcd-"));
    const etcd = new TestEtcd(dir, await freePort(), await freePort());
    await etcd.start();
    return etcd;
  }

  location(prefix: string): StoreLocation {
    return { host: "127.0.0.1", port: this.clientPort, prefix, tls: false };
  }

  url(prefix: string): string {
    return `etcd://127.0.0.1:${this.clientPort}${prefix}`;
  }

  client(prefix = "/t"): EtcdClient {
    return new EtcdClient(this.location(prefix));
  }

  async start(): Promise<void> {
    const client = `http://127.0.0.1:${this.clientPort}`;
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const child = spawn(
      "etcd",
      [
        "--name",
        "test",
        "--data-dir",
        this.dataDir,
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        `test=${peer}`,
        "--log-level",
        "error",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    this.child = child;
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      if (this.log.length < 200) this.log.push(chunk);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const probe = this.client();
    const deadline = Date.now() + 20_000;
    try {
      while (true) {
        try {
          await probe.get("/probe");
          return;
        } catch (error) {
          if (child.exitCode !== null || Date.now() > deadline) {
            throw new Error(
              `etcd did not start: ${(error as Error).message}\n${this.log.join("")}`,
              { cause: error },
            );
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
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
    rmSync(this.dataDir, { recursive: true, force: true });
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
