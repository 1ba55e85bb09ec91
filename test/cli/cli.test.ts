// The `edgetun` command line (dist/src/cli/main.js) as an operator meets it: configuration errors
// with file:line and exit code 1 before anything is brought up, key commands that agree with
// `wg`, clear messages for interfaces that do not exist, the help text and option checks.
// Runs without root; as root, `up` runs inside a namespace created here, so that a file wrongly
// accepted could not touch the host's network, and the namespace is checked to be untouched.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generatePrivateKey, publicKeyOf } from "../../src/core/keys.js";
import { Testbed, commandExists, netnsUnavailableReason } from "../support/netns.js";

const cli = new URL("../../dist/src/cli/main.js", import.meta.url).pathname;
const buildMissing = existsSync(cli) ? null : "needs the build (npm run build)";
if (buildMissing) console.warn(`edgetun command line tests skipped: ${buildMissing}`);
const wgMissing = commandExists("wg") ? null : "needs wg (wireguard-tools) to compare keys";
if (wgMissing) console.warn(`edgetun genkey/pubkey against wg skipped: ${wgMissing}`);
/** Namespaces are used when they can be; without root `up` cannot bring anything up anyway. */
const useNamespace = netnsUnavailableReason() === null;
const isRoot = process.getuid?.() === 0;

const KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const runTag = randomBytes(3).toString("hex");
let nameCounter = 0;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], input?: string): Result {
  const result = spawnSync(command, args, {
    encoding: "utf8",
    timeout: 20_000,
    ...(input !== undefined ? { input } : {}),
  });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function edgetun(args: string[], options: { input?: string; ns?: string } = {}): Result {
  if (options.ns) {
    return run("ip", ["netns", "exec", options.ns, process.execPath, cli, ...args], options.input);
  }
  return run(process.execPath, [cli, ...args], options.input);
}

/** A message for people: `edgetun: …` on one line, no stack trace. */
function expectCleanError(result: Result): void {
  expect(result.status, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(1);
  expect(result.stderr).toMatch(/^edgetun: \S/);
  expect(result.stderr).not.toMatch(/\n\s+at /);
  expect(result.stderr.trim().split("\n")).toHaveLength(1);
}

describe.skipIf(buildMissing !== null)("edgetun up: configuration errors", () => {
  const bed = useNamespace ? new Testbed() : null;
  let ns: string | undefined;
  const tmp = mkdtempSync(join(tmpdir(), "edgetun-cli-"));
  const names: string[] = [];

  const privateKey = generatePrivateKey();
  const peerKey = publicKeyOf(generatePrivateKey());
  const otherPeerKey = publicKeyOf(generatePrivateKey());

  beforeAll(() => {
    if (bed) ns = bed.namespace("cli");
  });

  afterAll(() => {
    bed?.cleanup();
    for (const name of names) {
      rmSync(`/var/run/wireguard/${name}.sock`, { force: true });
      rmSync(`/run/edgetun/${name}.pid`, { force: true });
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  function nextName(): string {
    const name = `c${runTag}${nameCounter++}`;
    names.push(name);
    return name;
  }

  function writeConfig(label: string, lines: string[]): string {
    const file = join(tmp, `${label}.conf`);
    writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 });
    return file;
  }

  /** Runs `edgetun up FILE`, expects exit 1 and `FILE:LINE: problem`, and nothing up. */
  function expectRefused(file: string, line: number | null, problem: RegExp): Result {
    const name = nextName();
    const result = edgetun(["up", file, "--interface", name], { ns });
    expectCleanError(result);
    const location = line === null ? `${file}: ` : `${file}:${line}: `;
    expect(result.stderr).toContain(`edgetun: ${location}`);
    expect(result.stderr).toMatch(problem);
    expect(result.stdout).toBe("");
    // Nothing was brought up: no interface, no control socket, no pid file.
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
    expect(existsSync(`/run/edgetun/${name}.pid`)).toBe(false);
    if (bed && ns) {
      const links = bed.exec(ns, "ip", ["-o", "link", "show"]);
      expect(
        links
          .trim()
          .split("\n")
          .map((l) => l.split(":")[1]!.trim()),
      ).toEqual(["lo"]);
    }
    return result;
  }

  it("unknown key", () => {
    const file = writeConfig("unknown-key", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "ListenPort = 51820",
      "Colour = blue",
    ]);
    expectRefused(file, 4, /unknown key "Colour" in \[Interface\]/);
  });

  it("unknown key in [Peer] that belongs in [Interface]", () => {
    const file = writeConfig("misplaced-key", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "",
      "[Peer]",
      `PublicKey = ${peerKey}`,
      "ListenPort = 51820",
    ]);
    expectRefused(file, 6, /unknown key "ListenPort" in \[Peer\].*belongs in \[Interface\]/);
  });

  it("bad key length: a truncated PrivateKey", () => {
    const file = writeConfig("short-key", [
      "[Interface]",
      `PrivateKey = ${privateKey.slice(0, 40)}`,
    ]);
    const result = expectRefused(file, 2, /PrivateKey decodes to 30 bytes; a key is 32 bytes/);
    // The secret is not repeated in the message.
    expect(result.stderr).not.toContain(privateKey.slice(0, 40));
  });

  it("bad key length: a hex PublicKey", () => {
    const file = writeConfig("hex-key", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "[Peer]",
      `PublicKey = ${Buffer.from(peerKey, "base64").toString("hex")}`,
    ]);
    expectRefused(file, 4, /PublicKey decodes to 48 bytes; a key is 32 bytes/);
  });

  it("bad key: not base64 at all", () => {
    const file = writeConfig("garbage-key", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "[Peer]",
      "PublicKey = not-a-key!",
    ]);
    expectRefused(file, 4, /32 bytes in base64/);
  });

  it("bad CIDR in AllowedIPs", () => {
    const file = writeConfig("bad-allowed", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "",
      "[Peer]",
      `PublicKey = ${peerKey}`,
      "AllowedIPs = 10.0.0.0/24, 10.1.0.0/33",
    ]);
    expectRefused(file, 6, /AllowedIPs: invalid CIDR "10\.1\.0\.0\/33": prefix length 33/);
  });

  it("bad CIDR in Address", () => {
    const file = writeConfig("bad-address", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "Address = 10.0.0.300/24",
    ]);
    expectRefused(file, 3, /Address: invalid CIDR "10\.0\.0\.300\/24"/);
  });

  it("duplicate peer", () => {
    const file = writeConfig("duplicate-peer", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "",
      "[Peer]",
      `PublicKey = ${peerKey}`,
      "AllowedIPs = 10.0.0.2/32",
      "",
      "[Peer]",
      `PublicKey = ${otherPeerKey}`,
      "",
      "[Peer]",
      `PublicKey = ${peerKey}`,
      "AllowedIPs = 10.0.0.3/32",
    ]);
    expectRefused(file, 12, /duplicate peer: this PublicKey is already given on line 5/);
  });

  for (const port of ["65536", "70000", "-1"]) {
    it(`ListenPort out of range (${port})`, () => {
      const file = writeConfig(`bad-port${port}`, [
        "[Interface]",
        `PrivateKey = ${privateKey}`,
        `ListenPort = ${port}`,
      ]);
      expectRefused(file, 3, /ListenPort must be a port number from 0 to 65535/);
    });
  }

  it("a SaveConfig that is neither true nor false", () => {
    const file = writeConfig("bad-save-config", [
      "# a comment first",
      "[Interface]",
      `PrivateKey = ${peerKey}`,
      "SaveConfig = yes",
    ]);
    expectRefused(file, 4, /SaveConfig must be true or false, not "yes"/);
  });

  it("a PrivateKeyFile that cannot be read", () => {
    const file = writeConfig("bad-key-file", [
      "[Interface]",
      "PrivateKeyFile = does-not-exist.key",
    ]);
    expectRefused(file, 2, /cannot read PrivateKeyFile .*does-not-exist\.key.*ENOENT/);
  });

  it("unreadable file: it does not exist", () => {
    const file = join(tmp, "missing.conf");
    expectRefused(file, null, /cannot read the file: .*ENOENT/);
  });

  it("unreadable file: it is a directory", () => {
    const file = join(tmp, "directory.conf");
    mkdirSync(file);
    expectRefused(file, null, /cannot read the file: it is a directory, not a regular file/);
  });

  it.skipIf(isRoot)("unreadable file: no permission (not as root)", () => {
    const file = writeConfig("no-permission", ["[Interface]", `PrivateKey = ${privateKey}`]);
    chmodSync(file, 0o000);
    expectRefused(file, null, /cannot read the file: .*EACCES/);
  });

  it("a bad --log-level is rejected before anything is brought up", () => {
    const file = writeConfig("valid", [
      "[Interface]",
      `PrivateKey = ${privateKey}`,
      "Address = 10.0.0.1/24",
    ]);
    const name = nextName();
    const result = edgetun(["up", file, "--interface", name, "--log-level", "loud"], { ns });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/--log-level/);
    expect(result.stderr).toMatch(/use debug, info, warn or error/);
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
    expect(existsSync(`/run/edgetun/${name}.pid`)).toBe(false);
  });
});

describe.skipIf(buildMissing !== null)("edgetun key commands", () => {
  it("genkey prints a private key; genpsk a pre-shared key; each new", () => {
    const keys = [0, 1].map(() => edgetun(["genkey"]));
    const psks = [0, 1].map(() => edgetun(["genpsk"]));
    for (const result of [...keys, ...psks]) {
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n$/);
    }
    expect(keys[0]!.stdout).not.toBe(keys[1]!.stdout);
    expect(psks[0]!.stdout).not.toBe(psks[1]!.stdout);
    // A private key is clamped as X25519 wants it, as `wg genkey` does.
    const raw = Buffer.from(keys[0]!.stdout.trim(), "base64");
    expect(raw[0]! & 7).toBe(0);
    expect(raw[31]! & 0x80).toBe(0);
    expect(raw[31]! & 0x40).toBe(0x40);
  });

  it.skipIf(wgMissing !== null)(
    "genkey | pubkey matches wg pubkey, and the other way round",
    () => {
      for (let i = 0; i < 3; i++) {
        const key = edgetun(["genkey"]).stdout;
        const ours = edgetun(["pubkey"], { input: key });
        expect(ours.status).toBe(0);
        expect(ours.stdout.trim()).toMatch(KEY_PATTERN);
        expect(ours.stdout).toBe(run("wg", ["pubkey"], key).stdout);

        const theirKey = run("wg", ["genkey"]).stdout;
        expect(edgetun(["pubkey"], { input: theirKey }).stdout).toBe(
          run("wg", ["pubkey"], theirKey).stdout,
        );
      }
    },
  );

  it("pubkey with garbage input exits 1 with a clear message", () => {
    for (const input of ["hello\n", "", `${"A".repeat(43)}\n`, "ab".repeat(32)]) {
      const result = edgetun(["pubkey"], { input });
      expectCleanError(result);
      expect(result.stderr).toMatch(/private key must be 32 bytes in base64/);
      expect(result.stdout).toBe("");
    }
  });
});

const missing = `nx${runTag}`;

// These two fail at the time of writing: src/show.ts rejects with a plain Error (no `code`),
// which src/cli.ts rethrows, so the message comes with a stack trace (exit code 1 by accident).
describe.skipIf(buildMissing !== null)(
  "edgetun show and syncconf of an interface that does not exist",
  () => {
    it("show of a non-existent interface exits 1 with a clear message", () => {
      for (const args of [
        ["show", missing],
        ["show", missing, "--json"],
      ]) {
        const result = edgetun(args);
        expectCleanError(result);
        expect(result.stderr).toContain(`no edgetun or WireGuard interface named ${missing}`);
        expect(result.stdout).toBe("");
      }
    });

    it("syncconf to a non-existent interface exits 1", () => {
      const tmp = mkdtempSync(join(tmpdir(), "edgetun-cli-"));
      try {
        const file = join(tmp, "x.conf");
        writeFileSync(file, `[Interface]\nPrivateKey = ${generatePrivateKey()}\n`, { mode: 0o600 });
        const result = edgetun(["syncconf", missing, file]);
        expectCleanError(result);
        expect(result.stderr).toContain(missing);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });
  },
);

describe.skipIf(buildMissing !== null)("edgetun down, help", () => {
  it("down of a non-existent interface exits 1", () => {
    const result = edgetun(["down", missing]);
    expectCleanError(result);
    expect(result.stderr).toContain(`no edgetun daemon serves ${missing}`);
  });

  it("--help lists up, down, show, syncconf, genkey, pubkey, genpsk", () => {
    const result = edgetun(["--help"]);
    expect(result.status).toBe(0);
    for (const command of ["up", "down", "show", "syncconf", "genkey", "pubkey", "genpsk"]) {
      expect(result.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, "m"));
    }
    expect(edgetun(["up", "--help"]).stdout).toMatch(/--log-level/);
    expect(result.stdout).toMatch(/^Exit status:\n\s+0\s+success\n\s+1\s+failed/m);
    expect(result.stdout).toMatch(/^\s+70\s+an internal error/m);
  });

  it("an unknown command or a missing argument exits 1", () => {
    expect(edgetun(["frobnicate"]).status).toBe(1);
    expect(edgetun(["up"]).status).toBe(1);
    expect(edgetun(["down"]).status).toBe(1);
  });
});
