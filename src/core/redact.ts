// Redaction of key-shaped text, for messages that quote input. No imports: error modules use it.
/**
 * A run of 40 or more base64 characters (a key in base64 or hex, whole or nearly): what an
 * error message must never repeat, since input that failed to parse may be a secret key.
 */
const KEY_SHAPED = /[A-Za-z0-9+/]{40,}={0,2}/g;
export const REDACTED_KEY = "<key redacted>";

/** `text` with anything key-shaped replaced: for every message that quotes input. */
export function redactKeyShaped(text: string): string {
  return text.replace(KEY_SHAPED, REDACTED_KEY);
}
