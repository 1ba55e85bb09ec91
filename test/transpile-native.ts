// The TUN tests' helper scripts run under plain node, which cannot load .ts: this transpiles
// src/native.ts and the module it imports into a scratch directory (types only, no checking:
// tsc covers that) and returns the path of native.js there.
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const repoRoot = new URL("..", import.meta.url).pathname;

export function transpileNativeModule(dir: string): string {
  const ts = createRequire(import.meta.url)("typescript") as typeof import("typescript");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  for (const name of ["native", "ipaddr"]) {
    const source = ts.sys.readFile(join(repoRoot, "src", `${name}.ts`));
    if (source === undefined) throw new Error(`cannot read src/${name}.ts`);
    const output = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    });
    writeFileSync(join(dir, `${name}.js`), output.outputText);
  }
  return join(dir, "native.js");
}
