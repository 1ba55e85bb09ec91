// The TUN tests' helper scripts run under plain node, which cannot load .ts: this transpiles
// src/host/native/ and the modules it imports at run time into a scratch directory (types
// only, no checking: tsc covers that) and returns the path of the native index there.
import { createRequire } from "node:module";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";

const repoRoot = new URL("../..", import.meta.url).pathname;

export function transpileNativeModule(dir: string): string {
  const ts = createRequire(import.meta.url)("typescript") as typeof import("typescript");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  const pending = ["src/host/native/index.ts"];
  const done = new Set<string>();
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (done.has(file)) continue;
    done.add(file);
    const source = ts.sys.readFile(join(repoRoot, file));
    if (source === undefined) throw new Error(`cannot read ${file}`);
    const output = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const target = join(dir, file.replace(/\.ts$/, ".js"));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, output);
    // Follow the relative imports that survived transpiling (type-only ones are gone).
    for (const match of output.matchAll(/from\s+"(\.{1,2}\/[^"]+)\.js"/g)) {
      pending.push(normalize(join(dirname(file), `${match[1]}.ts`)));
    }
  }
  return join(dir, "src/host/native/index.js");
}
