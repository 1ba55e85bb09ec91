import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "build/", "node_modules/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { process: "readonly", console: "readonly", Buffer: "readonly" },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      eqeqeq: ["error", "always"],
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    // The protocol core takes bytes and a clock and returns what to send where: no I/O, no
    // timers, no process state, and nothing from the layers above it.
    files: ["src/core/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              regex:
                "^(node:)?(fs|fs/promises|net|dgram|child_process|http|https|http2|tls|dns|dns/promises|timers|timers/promises|process|worker_threads|cluster|os|readline)$",
              message: "src/core does no I/O: the host layer owns sockets, files and timers.",
            },
            {
              regex: "(^|/)(host|cli)/",
              message: "src/core must not depend on the host or command-line layers.",
            },
          ],
        },
      ],
      "no-restricted-globals": [
        "error",
        ...["process", "setTimeout", "setInterval", "setImmediate", "clearTimeout"].map((name) => ({
          name,
          message: "src/core takes its clock from the caller.",
        })),
        ...["clearInterval", "clearImmediate", "queueMicrotask", "fetch"].map((name) => ({
          name,
          message: "src/core does no I/O and schedules nothing itself.",
        })),
      ],
    },
  },
);
