#!/usr/bin/env node
// The `edgetun-go` command: see wgo.ts.
import { main } from "./wgo.js";

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exit(code);
});
