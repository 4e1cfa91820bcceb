/**
 * `deno doc --lint mod.ts`, minus one known false positive.
 *
 * Deno 2.9's doc linter reports every type from an npm package that a public signature mentions
 * (`Effect`, `Stream`, `Scope`, `Cause.YieldableError`, `Schema.Struct`, …) as a "private type"
 * (denoland/deno#27364): nothing in this package can make them public. This script runs the
 * linter and tolerates exactly those: a `private-type-ref` whose referenced declaration is not
 * in this repository's own sources. Every other diagnostic (missing JSDoc, a missing return
 * type, a private type of our own) fails, and is printed.
 *
 * Usage: `deno run --allow-run=deno --allow-read scripts/doc_lint.ts` (from the repository root).
 * Exit status 0 when only the tolerated errors remain.
 */
const root = new URL("../", import.meta.url);

const output = await new Deno.Command("deno", {
  args: ["doc", "--lint", "mod.ts"],
  cwd: root,
  env: { NO_COLOR: "1" },
  stdout: "piped",
  stderr: "piped",
}).output();
const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);

/** Every line of this repository's own TypeScript (node_modules and scratch left out). */
const ownLines = new Set<string>();
const skip = /(^|\/)(node_modules|scratch|\.git|\.cache)(\/|$)/;
const collect = async (dir: URL, relative: string): Promise<void> => {
  for await (const entry of Deno.readDir(dir)) {
    const path = relative + entry.name;
    if (skip.test(path)) continue;
    if (entry.isDirectory) await collect(new URL(`${entry.name}/`, dir), `${path}/`);
    else if (entry.isFile && /\.(ts|tsx|mts)$/.test(path)) {
      const source = await Deno.readTextFile(new URL(entry.name, dir));
      for (const line of source.split("\n")) ownLines.add(line.trim());
    }
  }
};
await collect(root, "");

// Each diagnostic starts with "error[code]: …"; a private-type-ref quotes the referenced
// declaration's first line right above "- this is the referenced type".
const blocks = text.split(/^(?=error\[)/m).filter((b) => b.startsWith("error["));
const tolerated: string[] = [];
const failing: string[] = [];
for (const block of blocks) {
  const header = block.split("\n")[0];
  const lines = block.split("\n");
  const marker = lines.findIndex((l) => l.includes("- this is the referenced type"));
  const declaration = marker > 0 ? lines[marker - 1].replace(/^\s*\d+\s*\|/, "").trim() : "";
  const external = header.startsWith("error[private-type-ref]") && declaration !== "" &&
    !ownLines.has(declaration);
  (external ? tolerated : failing).push(external ? header : block.trimEnd());
}

if (blocks.length === 0 && !output.success) {
  console.error(text);
  console.error("deno doc --lint failed without diagnostics");
  Deno.exit(1);
}
for (const block of failing) console.error(`${block}\n`);
console.log(
  `deno doc --lint: ${failing.length} error(s); ${tolerated.length} tolerated ` +
    `private-type-ref(s) to npm package types (denoland/deno#27364)`,
);
Deno.exit(failing.length === 0 ? 0 : 1);
