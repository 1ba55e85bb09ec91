import { describe, expect, it } from "vitest";
import { EdgetunError } from "../../src/core/errors.js";
import { KeyFormatError, decodeKey } from "../../src/core/keys.js";
import { InvalidCidrError, parseCidr } from "../../src/core/ipaddr.js";
import {
  ConfigError,
  InterfaceSetupError,
  MetricsListenError,
  NativeError,
  UapiClientError,
  UapiSocketError,
} from "../../src/host/errors.js";
import { EXIT_BUG, EXIT_FAILED, UsageError, reportOf } from "../../src/cli/exit-status.js";
import { fleetAttachment } from "../../src/cli/fleet.js";
import { parseConfig, parseEndpointSetting } from "../../src/host/config.js";
import { createLogger } from "../../src/host/log.js";
import { generatePrivateKey } from "../../src/core/keys.js";

describe("one error hierarchy", () => {
  it("every area's error is an EdgetunError with a stable code and its own name", () => {
    const errors: Array<[EdgetunError, string, string]> = [
      [new ConfigError("ERR_CONFIG_PORT", "a.conf", 3, "bad"), "ConfigError", "ERR_CONFIG_PORT"],
      [new InterfaceSetupError("ip failed"), "InterfaceSetupError", "ERR_INTERFACE_SETUP"],
      [new NativeError("EPERM", "no"), "NativeError", "EPERM"],
      [new UapiSocketError("EEXIST", "in the way"), "UapiSocketError", "EEXIST"],
      [new UapiClientError("gone", "ERR_NO_INTERFACE"), "UapiClientError", "ERR_NO_INTERFACE"],
      [new MetricsListenError("EADDRINUSE", "taken"), "MetricsListenError", "EADDRINUSE"],
    ];
    for (const [error, name, code] of errors) {
      expect(error).toBeInstanceOf(EdgetunError);
      expect(error.name).toBe(name);
      expect(error.code).toBe(code);
    }
    expect(() => decodeKey("nope")).toThrow(KeyFormatError);
    expect(() => decodeKey("nope")).toThrow(EdgetunError);
    expect(() => parseCidr("10.0.0.0/33")).toThrow(InvalidCidrError);
    expect(() => parseCidr("10.0.0.0/33")).toThrow(EdgetunError);
  });

  it("the command line prints an EdgetunError or a system error as a message, status 1", () => {
    expect(reportOf(new ConfigError("ERR_CONFIG_PORT", "a.conf", 3, "bad port"))).toEqual({
      status: EXIT_FAILED,
      text: "a.conf:3: bad port",
    });
    const system = Object.assign(new Error("open /x: permission denied"), { code: "EACCES" });
    expect(reportOf(system)).toEqual({ status: EXIT_FAILED, text: system.message });
  });

  it("a fleet option used without the one it needs is a usage mistake like any other", async () => {
    const config = parseConfig(`[Interface]\nPrivateKey = ${generatePrivateKey()}\n`, "hub.conf");
    const options = { advertiseEndpoint: [parseEndpointSetting("192.0.2.1:51820")] };
    const attach = fleetAttachment(options, config, createLogger({ level: "error" }), () => {});
    await expect(attach).rejects.toThrow(UsageError);
    await expect(attach).rejects.toMatchObject({
      code: "ERR_USAGE",
      message: "--advertise-endpoint needs --peers-from",
    });
  });

  it("anything else is a bug: its stack, status 70", () => {
    const bug = new TypeError("cannot read properties of undefined");
    const report = reportOf(bug);
    expect(report.status).toBe(EXIT_BUG);
    expect(report.text).toContain("TypeError: cannot read properties of undefined\n    at ");
    expect(reportOf("a string").status).toBe(EXIT_BUG);
  });
});
