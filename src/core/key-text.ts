// Key text as `wg` writes it: 32 bytes in standard base64 (44 characters). Apart from keys.ts
// (which makes and derives keys) so that checking a key's text loads no cryptography: the
// command line checks `--ready-peer` while parsing, before it knows which command runs.
import { EdgetunError } from "./errors.js";

/** Key text that is not 32 bytes of base64; the message never repeats the text itself. */
export class KeyFormatError extends EdgetunError {
  constructor(message: string) {
    super("ERR_KEY_FORMAT", message);
  }
}

export function decodeKey(text: string, what = "key"): Buffer {
  const trimmed = text.trim();
  const raw = Buffer.from(trimmed, "base64");
  if (!/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(trimmed) || raw.length !== 32) {
    throw new KeyFormatError(`${what} must be 32 bytes in base64 (44 characters ending in "=")`);
  }
  return raw;
}

export function encodeKey(raw: Uint8Array): string {
  return Buffer.from(raw).toString("base64");
}
