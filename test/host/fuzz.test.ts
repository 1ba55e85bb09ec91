// Property-based fuzzing of every parser that takes input from outside: datagrams, handshake
// messages, configuration files and control-socket requests (targets in test/support). A few
// thousand inputs each here; `npm run fuzz` runs the same targets a million times or more.
import fc from "fast-check";
import { describe, it } from "vitest";
import { allTargets } from "../support/fuzz-targets.js";

describe("fuzzing (property-based)", () => {
  for (const target of allTargets()) {
    it(
      target.name,
      async () => {
        await fc.assert(
          fc.asyncProperty(target.input, async (input) => {
            await target.check(input);
          }),
          { numRuns: 3000 },
        );
      },
      120_000,
    );
  }
});
