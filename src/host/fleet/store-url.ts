// Where the fleet lives, as `--store` and `--peers-from` name it, and the store's errors. Apart
// from the client (etcd.ts, which loads node:http and node:https) so that the command line can
// check a store URL while parsing its options without loading the client (issue 14).
import { EdgetunError } from "../../core/errors.js";

/** Where the fleet lives: `etcd://HOST:PORT/PREFIX` (plain) or `etcds://HOST:PORT/PREFIX` (TLS). */
export interface StoreLocation {
  host: string;
  port: number;
  /** Key prefix without a trailing slash, e.g. "/edgetun/prod". */
  prefix: string;
  tls: boolean;
}

export type EtcdErrorCode =
  | "ERR_STORE_URL"
  | "ERR_STORE_UNREACHABLE"
  | "ERR_STORE_REQUEST"
  | "ERR_STORE_COMPACTED"
  | "ERR_STORE_RESPONSE";

export class EtcdError extends EdgetunError {
  declare readonly code: EtcdErrorCode;
  constructor(
    code: EtcdErrorCode,
    message: string,
    /** For ERR_STORE_COMPACTED: the oldest revision still available. */
    readonly compactRevision = 0,
  ) {
    super(code, message);
  }
}

const PREFIX_PATTERN = /^(\/[A-Za-z0-9._-]+)+$/;

export function parseStoreUrl(text: string): StoreLocation {
  const fail = (why: string) =>
    new EtcdError(
      "ERR_STORE_URL",
      `invalid store URL ${JSON.stringify(text)}: ${why} (expected etcd://HOST:PORT/PREFIX or etcds://HOST:PORT/PREFIX)`,
    );
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw fail("not a URL");
  }
  if (url.protocol !== "etcd:" && url.protocol !== "etcds:") throw fail("unknown scheme");
  if (url.username || url.password) {
    throw fail("no credentials in the URL; use client certificates (--store-cert/--store-key)");
  }
  if (url.search || url.hash) throw fail("no query or fragment");
  if (!url.hostname) throw fail("no host");
  const port = url.port === "" ? 2379 : Number(url.port);
  const prefix = url.pathname.replace(/\/+$/, "");
  if (!PREFIX_PATTERN.test(prefix)) {
    throw fail("the prefix must be one or more /segments of letters, digits, '.', '_' or '-'");
  }
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  return { host, port, prefix, tls: url.protocol === "etcds:" };
}
