// The benchmarks' command lines, parsed one way: each bench says what it takes (--help),
// refuses an option it does not know (exit 2, not a 20-minute run with the option ignored) and
// a number that is not one, naming the option.
import { parseArgs } from "node:util";

type OptionSpec =
  { type: "string"; default?: string; help: string } | { type: "boolean"; help: string };

type OptionValues<Spec extends Record<string, OptionSpec>> = {
  [Name in keyof Spec]: Spec[Name] extends { type: "boolean" }
    ? boolean
    : Spec[Name] extends { default: string }
      ? string
      : string | undefined;
};

/** What `npm run <script> -- --help` prints. */
function usageOf(script: string, summary: string, spec: Record<string, OptionSpec>): string {
  const lines = [`npm run ${script} [-- options]: ${summary}`, ""];
  for (const [name, option] of Object.entries(spec)) {
    const flag = option.type === "boolean" ? `--${name}` : `--${name} <value>`;
    const fallback =
      option.type === "string" && option.default !== undefined
        ? ` (default ${option.default})`
        : "";
    lines.push(`  ${flag.padEnd(26)} ${option.help}${fallback}`);
  }
  lines.push(`  ${"--help".padEnd(26)} this text`, "");
  return lines.join("\n");
}

/** Ends the bench with a usage error: the message, how to ask for the options, exit 2. */
export function benchUsageError(script: string, message: string): never {
  process.stderr.write(`${script}: ${message} (--help lists the options)\n`);
  process.exit(2);
}

/**
 * The options of the bench that `npm run <script>` starts, from process.argv, or exits: 0
 * after --help, 2 after a mistake.
 */
export function benchOptions<Spec extends Record<string, OptionSpec>>(
  script: string,
  summary: string,
  spec: Spec,
): OptionValues<Spec> {
  // npm passes a literal "--" through when the bench is run as `npm run … -- --opt`.
  const args = process.argv.slice(2).filter((arg) => arg !== "--");
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(usageOf(script, summary, spec));
    process.exit(0);
  }
  const options: Record<string, { type: "string" | "boolean"; default?: string }> = {};
  for (const [name, option] of Object.entries(spec)) {
    options[name] =
      option.type === "string" && option.default !== undefined
        ? { type: "string", default: option.default }
        : { type: option.type };
  }
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false })
      .values as OptionValues<Spec>;
  } catch (error) {
    return benchUsageError(script, (error as Error).message);
  }
}

/** A numeric option's value, or a usage error naming the option and what it wants. */
export function numberOption(
  script: string,
  name: string,
  text: string,
  { min, integer = false }: { min: number; integer?: boolean },
): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < min) {
    benchUsageError(script, `--${name} wants a number of at least ${min}, not "${text}"`);
  }
  if (integer && !Number.isInteger(value)) {
    benchUsageError(script, `--${name} wants a whole number, not "${text}"`);
  }
  return value;
}
