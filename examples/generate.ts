/**
 * The generation API in a dozen lines: the shared stories260K model over 2 ranks (one Worker and
 * one WebGPU device each), streaming a story to stdout as it is generated.
 *
 *   deno run -A examples/generate.ts
 */
import { fileURLToPath } from "node:url";
import { Effect, Stream } from "effect";
import { WorkersTransport } from "../actors/workers.ts";
import { generate, loadTokenizer } from "../models/generate.ts";
import { LlamaModel } from "../models/llama.ts";

const shared = (file: string) =>
  fileURLToPath(new URL(`../../shared/models/${file}`, import.meta.url));
const write = (text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text));
const prompt = "Once upon a time";

const story = Effect.gen(function* () {
  const path = shared("stories260K.bin");
  const model = yield* LlamaModel.load({ source: { format: "llama2c", path }, tp: 2 });
  const tokenizer = yield* loadTokenizer(path, shared("tok512.bin"));
  write(prompt);
  yield* generate(model, tokenizer, { prompt, maxTokens: 200 }).pipe(
    Stream.runForEach(({ text }) => Effect.sync(() => write(text))),
  );
  write("\n");
});
await Effect.runPromise(Effect.scoped(story).pipe(Effect.provide(WorkersTransport())));
