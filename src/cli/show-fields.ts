// `edgetun show IF FIELD` and `edgetun show all FIELD`: one field, tab-separated, in the form
// `wg show` prints it, for scripts written against `wg show`. With `all`, each line starts with
// the interface name and a tab, as in `wg show all FIELD`.
import type { InterfaceState } from "./show.js";

export const SHOW_FIELDS = [
  "public-key",
  "listen-port",
  "fwmark",
  "peers",
  "endpoints",
  "allowed-ips",
  "latest-handshakes",
  "transfer",
  "persistent-keepalive",
] as const;

export type ShowField = (typeof SHOW_FIELDS)[number];

export function isShowField(text: string): text is ShowField {
  return (SHOW_FIELDS as readonly string[]).includes(text);
}

/** The field's lines for one interface; `withName` prefixes each with the interface name. */
export function formatField(state: InterfaceState, field: ShowField, withName: boolean): string {
  const prefix = withName ? `${state.name}\t` : "";
  const perPeer = (value: (peer: InterfaceState["peers"][number]) => string): string[] =>
    state.peers.map((peer) => `${peer.publicKey}\t${value(peer)}`);
  let lines: string[];
  switch (field) {
    case "public-key":
      lines = [state.publicKey ?? "(none)"];
      break;
    case "listen-port":
      lines = [String(state.listenPort)];
      break;
    case "fwmark":
      lines = [state.fwmark === 0 ? "off" : `0x${state.fwmark.toString(16)}`];
      break;
    case "peers":
      lines = state.peers.map((peer) => peer.publicKey);
      break;
    case "endpoints":
      lines = perPeer((peer) => peer.endpoint ?? "(none)");
      break;
    case "allowed-ips":
      lines = perPeer((peer) => (peer.allowedIps.length ? peer.allowedIps.join(" ") : "(none)"));
      break;
    case "latest-handshakes":
      lines = perPeer((peer) => String(peer.latestHandshake));
      break;
    case "transfer":
      lines = perPeer((peer) => `${peer.rxBytes}\t${peer.txBytes}`);
      break;
    case "persistent-keepalive":
      lines = perPeer((peer) =>
        peer.persistentKeepalive === 0 ? "off" : String(peer.persistentKeepalive),
      );
      break;
  }
  return lines.map((line) => `${prefix}${line}\n`).join("");
}
