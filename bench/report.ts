/**
 * docs/BENCHMARKS.md is written by several benchmarks; each owns one section between HTML
 * comment markers and rewrites only that, so running one keeps the others' latest figures.
 * Raw numbers go to docs/benchmarks/<name>.json.
 */
const FILE = "docs/BENCHMARKS.md";

export const machine = (adapter?: string) =>
  `${new Date().toISOString().slice(0, 10)}, ${Deno.build.os}/${Deno.build.arch}, ` +
  `${navigator.hardwareConcurrency} cores${adapter ? `, adapter ${adapter}` : ""}`;

export const writeSection = async (name: string, markdown: string, raw: unknown) => {
  const start = `<!-- ${name}:start -->`, end = `<!-- ${name}:end -->`;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  let text = "# Benchmarks\n\nEach section is written by the command it names.\n";
  try {
    text = await Deno.readTextFile(FILE);
  } catch { /* first run */ }
  const at = text.indexOf(start), stop = text.indexOf(end);
  text = at >= 0 && stop > at
    ? text.slice(0, at) + block + text.slice(stop + end.length)
    : `${text.trimEnd()}\n\n${block}\n`;
  await Deno.mkdir("docs/benchmarks", { recursive: true });
  await Deno.writeTextFile(FILE, text);
  // Tables come out unaligned; `deno fmt` aligns them, so `deno task check` stays clean.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", FILE] }).output();
  await Deno.writeTextFile(`docs/benchmarks/${name}.json`, JSON.stringify(raw, null, 2) + "\n");
};
