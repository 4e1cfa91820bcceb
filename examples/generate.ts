/**
 * The generation API in a dozen lines: the bundled stories260K model over 2 ranks (one Worker and
 * one WebGPU device each), streaming a story to stdout as it is generated.
 *
 *   deno run -A examples/generate.ts
 */
import { Effect, Stream } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import { generate } from "../engine/generate.ts";
import { loadTokenizer } from "../models/files.ts";
import { LlamaModel } from "../models/llama.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const write = (text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text));
const prompt = "Once upon a time";

const story = Effect.gen(function* () {
  const path = STORIES260K_PATH;
  const model = yield* LlamaModel.load({ source: { format: "llama2c", path }, tp: 2 });
  const tokenizer = yield* loadTokenizer(path, TOK512_PATH);
  write(prompt);
  yield* generate(model, tokenizer, { prompt, maxTokens: 200 }).pipe(
    Stream.runForEach(({ text }) => Effect.sync(() => write(text))),
  );
  write("\n");
});
await Effect.runPromise(Effect.scoped(story).pipe(Effect.provide(WorkersTransport())));
