// The daemon's JavaScript heap. V8 grows its young generation (two semi-spaces, where new
// objects are made) up to 16 MB each under a burst of allocation, such as thousands of
// handshakes at once, and keeps them: about 30 MB resident for the rest of the process's life,
// most of a hub's idle memory above its peers' own state. A daemon's steady allocation is
// small (the data path's buffers are reused and the native receive thread opens data without
// JS), so the semi-spaces stay at V8's starting size (1 MB) instead; a burst then costs more,
// shorter young-generation collections. Measured with bench/scale.ts at 5,000 peers: the
// simultaneous start is unchanged, the live hub about 50 MB smaller, and requests as large
// as the fleet (`up`'s file, syncconf, get) 20-50 % slower (the README gives the figures).
import { setFlagsFromString } from "node:v8";

/**
 * From now on V8 does not grow the young generation. Read by V8 each time it would grow, so
 * it applies to a running process (unlike --max-semi-space-size, fixed when the heap is made).
 */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString("--semi-space-growth-factor=1");
}
