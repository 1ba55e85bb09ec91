// The Kubernetes manifests in configs/kubernetes/ against the API's own schemas (the
// kubernetes-models package: every field name, type and required field), plus what this
// project promises of them: no `:latest` image, non-root, RuntimeDefault seccomp, NET_ADMIN
// as the only capability, /dev/net/tun, the metrics port the daemon serves by default.
import { readFileSync, readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { Namespace, Pod, Service } from "kubernetes-models/v1";
import { DaemonSet, Deployment } from "kubernetes-models/apps/v1";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { DEFAULT_METRICS_PORT } from "../../src/host/metrics.js";

const directory = new URL("../../configs/kubernetes/", import.meta.url).pathname;

interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  [key: string]: unknown;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const models: Record<string, new (data: any) => { validate(): void }> = {
  "v1/Pod": Pod,
  "v1/Namespace": Namespace,
  "v1/Service": Service,
  "apps/v1/DaemonSet": DaemonSet,
  "apps/v1/Deployment": Deployment,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
};

function resources(): Array<{ file: string; resource: Resource }> {
  return readdirSync(directory)
    .filter((file) => file.endsWith(".yaml"))
    .flatMap((file) =>
      parseAllDocuments(readFileSync(directory + file, "utf8")).map((document) => {
        expect(document.errors, file).toEqual([]);
        return { file, resource: document.toJS() as Resource };
      }),
    );
}

interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; seccompProfile?: { type: string } };
  containers: Array<{
    name: string;
    image: string;
    args?: string[];
    ports?: Array<{ containerPort: number; name?: string }>;
    securityContext?: {
      runAsNonRoot?: boolean;
      allowPrivilegeEscalation?: boolean;
      capabilities?: { add?: string[]; drop?: string[] };
      seccompProfile?: { type: string };
    };
    volumeMounts?: Array<{ name: string; mountPath: string }>;
  }>;
  volumes?: Array<{ name: string; hostPath?: { path: string; type?: string } }>;
}

function podSpecOf(resource: Resource): PodSpec | null {
  if (resource.kind === "Pod") return resource.spec as PodSpec;
  if (resource.kind === "DaemonSet" || resource.kind === "Deployment") {
    return (resource.spec as { template: { spec: PodSpec } }).template.spec;
  }
  return null;
}

describe("configs/kubernetes", () => {
  const all = resources();

  it("has the edge DaemonSet, a hub, the sidecar pod and a PodMonitor", () => {
    const kinds = all.map(({ resource }) => resource.kind);
    for (const kind of ["DaemonSet", "Deployment", "Service", "Pod", "PodMonitor"]) {
      expect(kinds).toContain(kind);
    }
  });

  it("every resource passes the API schema", () => {
    for (const { file, resource } of all) {
      const model = models[`${resource.apiVersion}/${resource.kind}`];
      expect(model, `${file}: no schema for ${resource.apiVersion} ${resource.kind}`).toBeDefined();
      expect(() => new model!(resource).validate(), `${file} ${resource.kind}`).not.toThrow();
    }
  });

  it("the schema check bites: a wrong type or a missing field is refused", () => {
    const pod = all.find(({ resource }) => resource.kind === "Pod")!.resource;
    const broken = structuredClone(pod) as Resource & { spec: PodSpec };
    (broken.spec.containers[1]!.securityContext as { runAsNonRoot: unknown }).runAsNonRoot = "yes";
    expect(() => new Pod(broken as never).validate()).toThrow(/runAsNonRoot must be boolean/);
    const noContainers = { ...pod, spec: {} };
    expect(() => new Pod(noContainers as never).validate()).toThrow(/containers/);
  });

  it("edgetun containers: pinned image, non-root, RuntimeDefault seccomp, only NET_ADMIN, /dev/net/tun", () => {
    let checked = 0;
    for (const { file, resource } of all) {
      const spec = podSpecOf(resource);
      if (!spec) continue;
      const where = `${file} ${resource.kind}`;
      expect(spec.securityContext?.runAsNonRoot, where).toBe(true);
      expect(spec.securityContext?.seccompProfile?.type, where).toBe("RuntimeDefault");
      for (const container of spec.containers) {
        expect(container.image, `${where} ${container.name}`).toMatch(/:[^:/]+$/);
        expect(container.image, `${where} ${container.name}`).not.toMatch(/:latest$/);
        expect(container.securityContext?.allowPrivilegeEscalation, where).toBe(false);
        expect(container.securityContext?.capabilities?.drop, where).toEqual(["ALL"]);
      }
      const edgetun = spec.containers.find((c) => c.name === "edgetun")!;
      expect(edgetun, where).toBeDefined();
      expect(edgetun.securityContext?.capabilities?.add, where).toEqual(["NET_ADMIN"]);
      expect(edgetun.securityContext?.seccompProfile?.type, where).toBe("RuntimeDefault");
      const tun = spec.volumes?.find((v) => v.hostPath?.path === "/dev/net/tun");
      expect(tun?.hostPath?.type, where).toBe("CharDevice");
      expect(
        edgetun.volumeMounts?.some((m) => m.name === tun!.name && m.mountPath === "/dev/net/tun"),
      ).toBe(true);
      // The control socket and pid file need a writable /run under a read-only root.
      expect(
        edgetun.volumeMounts?.some((m) => m.mountPath === "/run"),
        where,
      ).toBe(true);
      const metrics = edgetun.ports?.find((p) => p.name === "metrics");
      expect(metrics?.containerPort, where).toBe(DEFAULT_METRICS_PORT);
      expect(edgetun.args?.join(" "), where).toContain(
        `--metrics-listen 0.0.0.0:${DEFAULT_METRICS_PORT}`,
      );
      checked++;
    }
    expect(checked).toBe(3);
  });
});
