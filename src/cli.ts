#!/usr/bin/env node
// The `edgetun` command.
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { KeyFormatError, generatePresharedKey, generatePrivateKey, publicKeyOf } from "./keys.js";

const program = new Command()
  .name("edgetun")
  .description("Userspace WireGuard-compatible tunnel for container edge nodes")
  .version("0.1.0");

program
  .command("genkey")
  .description("print a new private key (base64), as `wg genkey` does")
  .action(() => {
    process.stdout.write(`${generatePrivateKey()}\n`);
  });

program
  .command("pubkey")
  .description("read a private key on stdin and print its public key, as `wg pubkey` does")
  .action(() => {
    try {
      process.stdout.write(`${publicKeyOf(readFileSync(0, "utf8"))}\n`);
    } catch (error) {
      if (!(error instanceof KeyFormatError)) throw error;
      process.stderr.write(`edgetun pubkey: ${error.message}\n`);
      process.exitCode = 1;
    }
  });

program
  .command("genpsk")
  .description("print a new pre-shared key (base64), as `wg genpsk` does")
  .action(() => {
    process.stdout.write(`${generatePresharedKey()}\n`);
  });

program.parse();
