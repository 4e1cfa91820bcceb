/**
 * The plain Promise API, no Effect needed: the bundled stories260K model over 2 ranks (one Worker
 * and one WebGPU device each), a story streamed to stdout, a completion as one string, and a
 * typed error caught with `instanceof`.
 *
 *   deno run -A examples/promise.ts
 */
import { LoadError, Tessera } from "../mod.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const write = (text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text));

// `await using` closes the model (every rank shut down) when this scope ends.
await using llm = await Tessera.load({ model: STORIES260K_PATH, tokenizer: TOK512_PATH, tp: 2 });

const prompt = "Once upon a time";
write(prompt);
for await (const piece of llm.generate(prompt, { maxTokens: 64, temperature: 0 })) {
  write(piece.text);
}
write("\n\n");

const text = await llm.complete("Lily and Ben", { maxTokens: 32, temperature: 0.8, seed: 7 });
console.log(`Lily and Ben${text}`);

try {
  await Tessera.load({ model: "no-such-model.bin" });
} catch (error) {
  if (!(error instanceof LoadError)) throw error;
  console.log(`\nas expected: ${error.message}`);
}
