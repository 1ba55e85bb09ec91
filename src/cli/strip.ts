// `edgetun strip FILE`: the file as `wg setconf` and `wg syncconf` take it, as `wg-quick strip`
// prints it, with edgetun's PrivateKeyFile turned into the PrivateKey it names (wg has no
// PrivateKeyFile). `wg syncconf edge0 <(edgetun strip /etc/edgetun/edge0.conf)`.
import { readFileSync } from "node:fs";
import { readConfigFile } from "../host/config.js";
import { encodeKey } from "../core/keys.js";

/** wg-quick's own [Interface] keys, which `wg` does not know. */
const WG_QUICK_KEYS = new Set([
  "address",
  "dns",
  "mtu",
  "table",
  "preup",
  "postup",
  "predown",
  "postdown",
  "saveconfig",
]);

/**
 * The text of `path` without wg-quick's keys, comments and blank lines kept as they are. The
 * file is parsed first, so a broken one is refused with its line rather than passed on.
 */
export function stripConfig(path: string): string {
  const config = readConfigFile(path);
  let inInterface = false;
  const out: string[] = [];
  for (const line of readFileSync(path, "utf8")
    .replace(/^\uFEFF/, "")
    .split("\n")) {
    const content = line.split("#")[0]!.trim();
    if (content.startsWith("[")) inInterface = /^\[\s*interface\s*\]$/i.test(content);
    const key = content.includes("=") ? content.slice(0, content.indexOf("=")).trim() : "";
    const lower = key.toLowerCase();
    if (inInterface && WG_QUICK_KEYS.has(lower)) continue;
    if (inInterface && lower === "privatekeyfile") {
      out.push(`PrivateKey = ${encodeKey(config.privateKey!)}`);
      continue;
    }
    out.push(line);
  }
  return out.join("\n");
}
