/**
 * The README's library examples must keep type-checking: every ```ts block under "## Library"
 * that imports "jsr:@tessera/tp" is written next to this file with the import pointed at
 * ../mod.ts and checked with `deno check`.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const PACKAGE = "jsr:@tessera/tp";

/** The ```ts blocks of the README's "## Library" section that import the package. */
const libraryExamples = (readme: string): string[] => {
  const start = readme.search(/^## Library\s*$/m);
  if (start < 0) return [];
  const rest = readme.slice(start).split("\n").slice(1).join("\n");
  const end = rest.search(/^## /m);
  const section = end < 0 ? rest : rest.slice(0, end);
  return [...section.matchAll(/^```ts\n([\s\S]*?)^```$/gm)]
    .map((m) => m[1])
    .filter((code) => code.includes(`"${PACKAGE}"`));
};

Deno.test("the README's library examples type-check against mod.ts", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const examples = libraryExamples(readme);
  assert(examples.length > 0, `no \`\`\`ts block importing ${PACKAGE} under "## Library"`);
  const files = examples.map((_, i) =>
    fileURLToPath(new URL(`.readme_example_${i}.ts`, import.meta.url))
  );
  try {
    for (const [i, code] of examples.entries()) {
      await Deno.writeTextFile(files[i], code.replaceAll(`"${PACKAGE}"`, `"../mod.ts"`));
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", ...files],
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const log = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert(out.success, `README example failed to type-check:\n${log}`);
  } finally {
    for (const file of files) await Deno.remove(file).catch(() => {});
  }
});
