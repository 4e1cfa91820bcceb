/**
 * The OpenAI-compatible service from the library API: load the engine (continuous batching over
 * the ranks), find the model's chat template, serve. `deno task serve` is the same plus flags
 * and a graceful drain on SIGTERM; here Ctrl-C simply stops the process.
 *
 *   deno run -A examples/serve.ts
 *   curl http://127.0.0.1:8000/v1/completions -H 'content-type: application/json' \
 *     -d '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 32, "temperature": 0}'
 */
import { Effect } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { ChatTemplate, loadChatTemplate } from "../serve/chat_template.ts";
import { startServer } from "../serve/server.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const modelPath = STORIES260K_PATH;
const tokenizerPath = TOK512_PATH;

const service = Effect.gen(function* () {
  const engine = yield* makeInferenceEngine({
    modelPath,
    tokenizerPath,
    tp: 2, // two ranks, each a Worker with its own WebGPU device
    maxSequences: 8,
    maxQueue: 16,
    modelId: "stories260K",
  });
  const template = yield* loadChatTemplate(modelPath, tokenizerPath);
  const server = yield* startServer({ port: 8000 }).pipe( // 127.0.0.1, no API key
    Effect.provideService(InferenceEngine, engine),
    Effect.provideService(ChatTemplate, template),
  );
  console.log(`listening on ${server.url}`);
  yield* Effect.never; // serve until the process is stopped
});

await Effect.runPromise(service.pipe(Effect.scoped, Effect.provide(WorkersTransport())));
