// wg-quick's SaveConfig: when the tunnel goes down, the file is rewritten from the running
// state, so that peers added with `wg set` survive a restart. The text is what wg-quick's
// save_config writes: its own [Interface] keys first (addresses as they are now, DNS, MTU,
// SaveConfig, hooks), then what `wg showconf` prints.
import { execFile } from "node:child_process";
import { renameSync, rmSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import type { InterfaceFileConfig } from "./config.js";
import { DEFAULT_MTU } from "./config.js";

const run = promisify(execFile);

function base64OfHex(hex: string): string {
  return Buffer.from(hex, "hex").toString("base64");
}

/**
 * `wg showconf`'s text from a control-socket `get=1` reply (its lines, errno excluded).
 * `privateKeyLine` replaces the PrivateKey line when given (a PrivateKeyFile reference).
 */
export function showconfFromUapi(lines: readonly string[], privateKeyLine?: string): string {
  const head: string[] = ["[Interface]"];
  let privateKey = "";
  interface PeerText {
    publicKey: string;
    presharedKey: string | null;
    allowedIps: string[];
    endpoint: string | null;
    keepalive: string | null;
  }
  const peers: PeerText[] = [];
  for (const line of lines) {
    const equals = line.indexOf("=");
    const key = line.slice(0, equals);
    const value = line.slice(equals + 1);
    const peer = peers.at(-1);
    if (key === "public_key") {
      peers.push({
        publicKey: base64OfHex(value),
        presharedKey: null,
        allowedIps: [],
        endpoint: null,
        keepalive: null,
      });
    } else if (!peer) {
      if (key === "private_key") privateKey = base64OfHex(value);
      else if (key === "listen_port" && value !== "0") head.push(`ListenPort = ${value}`);
      else if (key === "fwmark" && value !== "0")
        head.push(`FwMark = 0x${Number(value).toString(16)}`);
    } else if (key === "preshared_key" && !/^0+$/.test(value)) {
      peer.presharedKey = base64OfHex(value);
    } else if (key === "allowed_ip") peer.allowedIps.push(value);
    else if (key === "endpoint") peer.endpoint = value;
    else if (key === "persistent_keepalive_interval" && value !== "0") peer.keepalive = value;
  }
  if (privateKeyLine) head.push(privateKeyLine);
  else if (privateKey) head.push(`PrivateKey = ${privateKey}`);
  // `wg showconf`'s order of keys.
  const sections = peers.map((peer) => {
    const out = ["[Peer]", `PublicKey = ${peer.publicKey}`];
    if (peer.presharedKey) out.push(`PresharedKey = ${peer.presharedKey}`);
    if (peer.allowedIps.length > 0) out.push(`AllowedIPs = ${peer.allowedIps.join(", ")}`);
    if (peer.endpoint) out.push(`Endpoint = ${peer.endpoint}`);
    if (peer.keepalive) out.push(`PersistentKeepalive = ${peer.keepalive}`);
    return out.join("\n");
  });
  return `${[head.join("\n"), ...sections].join("\n\n")}\n`;
}

/** wg-quick's lines of its own, in its order, for the top of the saved [Interface]. */
export function wgQuickInterfaceLines(
  config: InterfaceFileConfig,
  addresses: readonly string[],
  mtu: number,
): string[] {
  const lines = addresses.map((address) => `Address = ${address}`);
  for (const server of config.dns.servers) lines.push(`DNS = ${server}`);
  // wg-quick saves search domains only through resolvconf's record; keep them from the file.
  if (config.dns.search.length > 0) lines.push(`DNS = ${config.dns.search.join(", ")}`);
  if (config.mtu !== DEFAULT_MTU || mtu !== DEFAULT_MTU) lines.push(`MTU = ${mtu}`);
  lines.push("SaveConfig = true");
  for (const hook of config.hooks.preUp) lines.push(`PreUp = ${hook}`);
  for (const hook of config.hooks.postUp) lines.push(`PostUp = ${hook}`);
  for (const hook of config.hooks.preDown) lines.push(`PreDown = ${hook}`);
  for (const hook of config.hooks.postDown) lines.push(`PostDown = ${hook}`);
  return lines;
}

/** The interface's addresses now (link-local ones left out: the kernel makes those). */
export async function currentAddresses(interfaceName: string): Promise<{
  addresses: string[];
  mtu: number;
}> {
  const { stdout } = await run("ip", ["-json", "address", "show", "dev", interfaceName]);
  const [link] = JSON.parse(stdout) as Array<{
    mtu: number;
    addr_info?: Array<{ local: string; prefixlen: number; scope: string }>;
  }>;
  const addresses = (link?.addr_info ?? [])
    .filter((info) => info.scope !== "link")
    .map((info) => `${info.local}/${info.prefixlen}`);
  return { addresses, mtu: link?.mtu ?? DEFAULT_MTU };
}

/** Replaces `path` with `text` atomically, readable by its owner only. */
export function writeConfigFile(path: string, text: string): void {
  const temporary = `${path}.tmp`;
  try {
    writeFileSync(temporary, text, { mode: 0o600 });
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/** The saved file's whole text. */
export function savedConfigText(
  config: InterfaceFileConfig,
  uapiLines: readonly string[],
  addresses: readonly string[],
  mtu: number,
  privateKeyLine?: string,
): string {
  const body = showconfFromUapi(uapiLines, privateKeyLine);
  const own = wgQuickInterfaceLines(config, addresses, mtu);
  return body.replace("[Interface]\n", `[Interface]\n${own.join("\n")}\n`);
}
