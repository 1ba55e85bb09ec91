// A small etcd v3 client over etcd's JSON gRPC gateway (`/v3/kv/*`, `/v3/watch`), which every
// etcd since 3.3 serves on its client port. Chosen over the npm `etcd3` package (gRPC): no
// dependency (etcd3 1.1.2 brings 38 packages, 16 MB, and ~0.8 s of gRPC loading before the first
// request), and the watch is ours to resume: a compacted start revision arrives as an explicit
// `compact_revision`, where etcd3 reports only "Watcher canceled".
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { EtcdError, type StoreLocation } from "./store-url.js";

// The store's address and errors live in store-url.ts, which the command line loads to check
// `--store` while parsing, without this client and node:https.
export { EtcdError, parseStoreUrl, type EtcdErrorCode, type StoreLocation } from "./store-url.js";

/** Files, never command-line values: a client key must not show in `ps`. */
export interface StoreTlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface KeyValue {
  key: string;
  value: Buffer;
  createRevision: number;
  modRevision: number;
}

export interface WatchEvent {
  type: "put" | "delete";
  key: string;
  value: Buffer;
  modRevision: number;
}

export interface WatchHandlers {
  /** The watch is registered: every change after its start revision will follow. */
  created(revision: number): void;
  /** The events of one response, in revision order. */
  events(events: WatchEvent[], revision: number): void;
  /** The stream ended: etcd went away, the start revision was compacted, or close() was called. */
  ended(error: EtcdError | null): void;
}

export interface Watch {
  close(): void;
}

/** A compare of a transaction: `key` does not exist yet. */
export interface Absent {
  absent: string;
}

export type TxnOp = { put: string; value: string | Buffer } | { delete: string };

/** Largest watch message buffered before the stream is given up on (bounded memory). */
const MAX_WATCH_MESSAGE = 8 * 1024 * 1024;
const MAX_RESPONSE = 64 * 1024 * 1024;

const b64 = (text: string | Buffer): string => Buffer.from(text).toString("base64");
const unb64 = (text: unknown): Buffer =>
  Buffer.from(typeof text === "string" ? text : "", "base64");
const int = (text: unknown): number => (typeof text === "string" ? Number(text) : 0);

/** The end of the key range holding every key that starts with `prefix`. */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export class EtcdClient {
  private readonly agent: HttpAgent;
  private readonly watches = new Set<IncomingMessage>();
  private closed = false;

  constructor(
    readonly location: StoreLocation,
    private readonly tlsFiles: StoreTlsFiles = {},
    private readonly timeoutMs = 5_000,
  ) {
    const useTls = location.tls || tlsFiles.ca !== undefined || tlsFiles.cert !== undefined;
    this.agent = useTls
      ? new HttpsAgent({
          keepAlive: true,
          ...(tlsFiles.ca ? { ca: tlsFiles.ca } : {}),
          ...(tlsFiles.cert ? { cert: tlsFiles.cert } : {}),
          ...(tlsFiles.key ? { key: tlsFiles.key } : {}),
        })
      : new HttpAgent({ keepAlive: true });
  }

  get usesTls(): boolean {
    return this.agent instanceof HttpsAgent;
  }

  /** "host:port" for messages. */
  get address(): string {
    const { host, port } = this.location;
    return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  }

  /** Every key under `prefix` at one revision (the newest when 0), read in pages. */
  async rangePrefix(
    prefix: string,
    options: { revision?: number; keysOnly?: boolean; pageSize?: number } = {},
  ): Promise<{ revision: number; kvs: KeyValue[] }> {
    const end = prefixEnd(prefix);
    const pageSize = options.pageSize ?? 2000;
    let revision = options.revision ?? 0;
    let from = Buffer.from(prefix);
    const kvs: KeyValue[] = [];
    while (true) {
      const body: Record<string, unknown> = {
        key: b64(from),
        range_end: b64(end),
        limit: String(pageSize),
      };
      if (revision) body.revision = String(revision);
      if (options.keysOnly) body.keys_only = true;
      const reply = await this.call("/v3/kv/range", body);
      // Later pages read at the first page's revision: one consistent snapshot.
      if (!revision) revision = int((reply.header as Record<string, unknown>)?.revision);
      const page = Array.isArray(reply.kvs) ? (reply.kvs as Array<Record<string, unknown>>) : [];
      for (const kv of page) kvs.push(keyValue(kv));
      if (reply.more !== true || page.length === 0) break;
      from = Buffer.concat([Buffer.from(kvs.at(-1)!.key), Buffer.from([0])]);
    }
    return { revision, kvs };
  }

  async get(key: string): Promise<KeyValue | null> {
    const reply = await this.call("/v3/kv/range", { key: b64(key) });
    const kvs = Array.isArray(reply.kvs) ? (reply.kvs as Array<Record<string, unknown>>) : [];
    return kvs.length > 0 ? keyValue(kvs[0]!) : null;
  }

  /** Writes `key`; with `lease` (an ID from {@link grantLease}) it goes when the lease ends. */
  async put(key: string, value: string | Buffer, lease?: string): Promise<number> {
    const body: Record<string, unknown> = { key: b64(key), value: b64(value) };
    if (lease !== undefined) body.lease = lease;
    const reply = await this.call("/v3/kv/put", body);
    return int((reply.header as Record<string, unknown>)?.revision);
  }

  /** A new lease of `ttlSeconds`; its ID, as etcd's JSON gateway writes it (a decimal string). */
  async grantLease(ttlSeconds: number): Promise<string> {
    const reply = await this.call("/v3/lease/grant", { TTL: String(ttlSeconds) });
    const id = reply.ID;
    if (typeof id !== "string" || !/^[0-9]+$/.test(id)) {
      throw new EtcdError("ERR_STORE_RESPONSE", "lease grant answered without an ID");
    }
    return id;
  }

  async delete(key: string): Promise<number> {
    const reply = await this.call("/v3/kv/deleterange", { key: b64(key) });
    return int(reply.deleted);
  }

  /** All of `ops` if every key in `absent` is still absent, else nothing. */
  async txn(compare: Absent[], ops: TxnOp[]): Promise<{ succeeded: boolean; revision: number }> {
    const reply = await this.call("/v3/kv/txn", {
      compare: compare.map((c) => ({
        key: b64(c.absent),
        target: "CREATE",
        result: "EQUAL",
        create_revision: "0",
      })),
      success: ops.map((op) =>
        "put" in op
          ? { request_put: { key: b64(op.put), value: b64(op.value) } }
          : { request_delete_range: { key: b64(op.delete) } },
      ),
    });
    return {
      succeeded: reply.succeeded === true,
      revision: int((reply.header as Record<string, unknown>)?.revision),
    };
  }

  /** Drops history before `revision` (what etcd's auto-compaction does). */
  async compact(revision: number): Promise<void> {
    await this.call("/v3/kv/compaction", { revision: String(revision), physical: true });
  }

  /**
   * Watches every key under `prefix` from `startRevision` on (inclusive). The stream ends
   * with ERR_STORE_COMPACTED when that revision is no longer kept, ERR_STORE_UNREACHABLE when
   * etcd goes away; the caller decides how to go on.
   */
  watch(prefix: string, startRevision: number, handlers: WatchHandlers): Watch {
    let ended = false;
    let response: IncomingMessage | null = null;
    const end = (error: EtcdError | null) => {
      if (ended) return;
      ended = true;
      if (response) this.watches.delete(response);
      request.destroy();
      response?.destroy();
      handlers.ended(error);
    };
    const body = JSON.stringify({
      create_request: {
        key: b64(prefix),
        range_end: b64(prefixEnd(prefix)),
        start_revision: String(startRevision),
      },
    });
    const request = this.send("/v3/watch", body, (res) => {
      response = res;
      this.watches.add(res);
      request.setTimeout(0);
      if (res.statusCode !== 200) {
        end(new EtcdError("ERR_STORE_REQUEST", `etcd refused the watch (HTTP ${res.statusCode})`));
        return;
      }
      res.socket.setKeepAlive(true, 5_000);
      let pending = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        pending += chunk;
        let newline: number;
        while (!ended && (newline = pending.indexOf("\n")) !== -1) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (line.trim() !== "") this.watchMessage(line, handlers, end);
        }
        if (pending.length > MAX_WATCH_MESSAGE) {
          end(new EtcdError("ERR_STORE_RESPONSE", "a watch message from etcd was too large"));
        }
      });
      res.on("end", () =>
        end(this.closed ? null : new EtcdError("ERR_STORE_UNREACHABLE", "etcd closed the watch")),
      );
      res.on("error", (error) => end(unreachable(this.address, error)));
    });
    request.on("error", (error) => end(unreachable(this.address, error)));
    return { close: () => end(null) };
  }

  private watchMessage(
    line: string,
    handlers: WatchHandlers,
    end: (error: EtcdError | null) => void,
  ): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      end(new EtcdError("ERR_STORE_RESPONSE", "etcd sent a watch message that is not JSON"));
      return;
    }
    if (message.error) {
      const detail = (message.error as { message?: string }).message ?? "unknown";
      end(new EtcdError("ERR_STORE_UNREACHABLE", `the watch failed: ${detail}`));
      return;
    }
    const result = (message.result ?? {}) as Record<string, unknown>;
    const revision = int((result.header as Record<string, unknown>)?.revision);
    if (result.canceled === true) {
      const compactRevision = int(result.compact_revision);
      end(
        compactRevision > 0
          ? new EtcdError(
              "ERR_STORE_COMPACTED",
              `the watch start revision was compacted (oldest kept: ${compactRevision})`,
              compactRevision,
            )
          : new EtcdError(
              "ERR_STORE_REQUEST",
              `etcd canceled the watch: ${String(result.cancel_reason ?? "no reason given")}`,
            ),
      );
      return;
    }
    if (result.created === true) handlers.created(revision);
    const events = Array.isArray(result.events)
      ? (result.events as Array<Record<string, unknown>>)
      : [];
    if (events.length > 0) {
      handlers.events(
        events.map((event) => {
          const kv = keyValue((event.kv ?? {}) as Record<string, unknown>);
          return {
            type: event.type === "DELETE" ? "delete" : "put",
            key: kv.key,
            value: kv.value,
            modRevision: kv.modRevision,
          };
        }),
        revision,
      );
    }
  }

  /** Ends open watches and idle connections. */
  close(): void {
    this.closed = true;
    for (const watch of this.watches) watch.destroy();
    this.watches.clear();
    this.agent.destroy();
  }

  private send(
    path: string,
    body: string,
    onResponse: (response: IncomingMessage) => void,
  ): ReturnType<typeof httpRequest> {
    const options = {
      host: this.location.host,
      port: this.location.port,
      path,
      method: "POST",
      agent: this.agent,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      timeout: this.timeoutMs,
    };
    const request = this.usesTls
      ? httpsRequest(options, onResponse)
      : httpRequest(options, onResponse);
    request.on("timeout", () =>
      request.destroy(
        Object.assign(new Error(`no answer in ${this.timeoutMs} ms`), { code: "ETIMEDOUT" }),
      ),
    );
    request.end(body);
    return request;
  }

  private call(path: string, payload: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const request = this.send(path, JSON.stringify(payload), (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE) {
            response.destroy();
            reject(new EtcdError("ERR_STORE_RESPONSE", `etcd's answer to ${path} was too large`));
            return;
          }
          chunks.push(chunk);
        });
        response.on("error", (error) => reject(unreachable(this.address, error)));
        response.on("end", () => {
          let reply: Record<string, unknown>;
          try {
            reply = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
          } catch {
            reject(new EtcdError("ERR_STORE_RESPONSE", `etcd's answer to ${path} is not JSON`));
            return;
          }
          if (response.statusCode !== 200) {
            const detail = String(reply.error ?? reply.message ?? `HTTP ${response.statusCode}`);
            const compacted = /compacted/.test(detail);
            reject(
              new EtcdError(
                compacted ? "ERR_STORE_COMPACTED" : "ERR_STORE_REQUEST",
                `etcd refused ${path}: ${detail}`,
              ),
            );
            return;
          }
          resolve(reply);
        });
      });
      request.on("error", (error) => reject(unreachable(this.address, error)));
    });
  }
}

function unreachable(address: string, error: Error): EtcdError {
  const code = (error as NodeJS.ErrnoException).code;
  return new EtcdError(
    "ERR_STORE_UNREACHABLE",
    `etcd at ${address} is unreachable: ${code ?? error.message}${code && error.message.includes(code) ? "" : code ? ` (${error.message})` : ""}`,
  );
}

function keyValue(kv: Record<string, unknown>): KeyValue {
  return {
    key: unb64(kv.key).toString("utf8"),
    value: unb64(kv.value),
    createRevision: int(kv.create_revision),
    modRevision: int(kv.mod_revision),
  };
}
