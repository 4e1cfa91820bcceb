/**
 * The engine behind the service, on the real stories260K over 2 Worker ranks: batched requests
 * give exactly the tokens each gives alone (and that generate() gives), a rank killed
 * mid-generation is restarted and its requests resume with identical greedy output, and the
 * queue, cancellation and drain keep their promises.
 */
import assert from "node:assert/strict";
import { Chunk, Effect, Either, Fiber, Stream } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import type { GeneratedPiece, GenerationRequest } from "../engine/engine.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { generate } from "../engine/generate.ts";
import { loadTokenizer, modelSourceOf } from "../models/files.ts";
import { LlamaModel } from "../models/llama.ts";
import { BATCH_PROMPTS } from "./fixtures/batch_prompts.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;

const PROMPTS = BATCH_PROMPTS;

type Engine = Effect.Effect.Success<ReturnType<typeof makeInferenceEngine>>;

const run = <A, E>(body: Effect.Effect<A, E, import("effect").Scope.Scope>) =>
  Effect.runPromise(Effect.scoped(body));

const withEngine = <A, E>(
  options: Partial<Parameters<typeof makeInferenceEngine>[0]>,
  body: (engine: Engine) => Effect.Effect<A, E, import("effect").Scope.Scope>,
) =>
  run(
    Effect.flatMap(
      makeInferenceEngine({ modelPath: MODEL, tokenizerPath: TOKENIZER, tp: 2, ...options }),
      body,
    ).pipe(Effect.provide(WorkersTransport())),
  );

const greedy = (engine: Engine, prompt: string, maxTokens: number): GenerationRequest => ({
  promptTokens: engine.tokenizer.encode(prompt, { bos: true, eos: false }),
  maxTokens,
  temperature: 0,
  topP: 0.9,
  stopAtEos: true,
});

const collect = (engine: Engine, request: GenerationRequest) =>
  Effect.flatMap(engine.submit(request), (stream) => Stream.runCollect(stream)).pipe(
    Effect.map((c) => Chunk.toReadonlyArray(c)),
  );

const tokensOf = (pieces: readonly GeneratedPiece[]) => pieces.map((p) => p.token);

Deno.test("engine: 8 concurrent greedy requests equal each one alone and generate()", async () => {
  const MAX = 40;
  // The reference: the plain generator on its own model, one request at a time.
  const expected = await run(
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(MODEL, TOKENIZER);
      const model = yield* LlamaModel.load({ source: yield* modelSourceOf(MODEL), tp: 2 });
      return yield* Effect.forEach(
        PROMPTS,
        (prompt) =>
          Stream.runCollect(generate(model, tokenizer, { prompt, maxTokens: MAX })).pipe(
            Effect.map((c) => Chunk.toReadonlyArray(c)),
          ),
      );
    }).pipe(Effect.provide(WorkersTransport())),
  );

  await withEngine({ maxSequences: 8 }, (engine) =>
    Effect.gen(function* () {
      const alone = yield* Effect.forEach(PROMPTS, (p) => collect(engine, greedy(engine, p, MAX)));
      const together = yield* Effect.forEach(
        PROMPTS,
        (p) => collect(engine, greedy(engine, p, MAX)),
        { concurrency: "unbounded" },
      );
      for (const [i, prompt] of PROMPTS.entries()) {
        assert.deepEqual(tokensOf(alone[i]), expected[i].map((t) => t.token), `alone: ${prompt}`);
        assert.deepEqual(tokensOf(together[i]), tokensOf(alone[i]), `batched: ${prompt}`);
        assert.equal(
          together[i].map((p) => p.text).join(""),
          expected[i].map((t) => t.text).join(""),
        );
        const last = together[i][together[i].length - 1];
        const stopped = last.token === engine.tokenizer.eosId ||
          last.token === engine.tokenizer.bosId;
        assert.equal(last.finishReason, stopped ? "stop" : "length");
        assert.ok(together[i].slice(0, -1).every((p) => p.finishReason === undefined));
      }
      const health = yield* engine.health;
      assert.equal(health.state, "ready");
      assert.equal(health.running, 0);
      assert.equal(health.ranks.length, 2);
      // The memory plan per rank, as /status shows it: weights and KV cache as loaded.
      for (const r of health.ranks) {
        assert.equal(r.contextLength, 512);
        assert.equal(r.modelContextLength, 512);
        assert.ok(r.weightBytes > 0 && r.kvCacheBytes > 0 && r.activationBytes > 0);
        assert.ok(r.memoryBudgetBytes !== undefined && r.memoryBudgetBytes > r.weightBytes);
      }
    }));
});

Deno.test("engine: a rank killed mid-generation is restarted and greedy output resumes unchanged", async () => {
  const MAX = 60;
  await withEngine(
    { maxSequences: 4, restartBackoff: { initialMillis: 50, maxMillis: 500 } },
    (engine) =>
      Effect.gen(function* () {
        const prompts = PROMPTS.slice(0, 3);
        const alone = yield* Effect.forEach(
          prompts,
          (p) => collect(engine, greedy(engine, p, MAX)),
        );
        const streams = yield* Effect.forEach(
          prompts,
          (p) => engine.submit(greedy(engine, p, MAX)),
        );
        // Read a few tokens of the first stream, then crash a rank while all three decode.
        let tokensSeen = 0;
        const first = yield* Effect.fork(Stream.runCollect(streams[0].pipe(
          Stream.tap((piece) =>
            piece.token >= 0 && tokensSeen++ === 10 ? engine.killRank(1) : Effect.void
          ),
        )));
        const rest = yield* Effect.forEach(streams.slice(1), (s) => Stream.runCollect(s), {
          concurrency: "unbounded",
        });
        const all = [
          Chunk.toReadonlyArray(yield* Fiber.join(first)),
          ...rest.map((c) => Chunk.toReadonlyArray(c)),
        ];
        for (const [i, prompt] of prompts.entries()) {
          assert.deepEqual(tokensOf(all[i]), tokensOf(alone[i]), `resumed: ${prompt}`);
        }
        const health = yield* engine.health;
        assert.equal(health.restarts, 1);
        assert.equal(health.state, "ready");
        assert.ok(health.ranks.every((r) => r.alive));
        // And the restarted group serves new requests.
        const again = yield* collect(engine, greedy(engine, prompts[0], MAX));
        assert.deepEqual(tokensOf(again), tokensOf(alone[0]));
      }),
  );
});

Deno.test("engine: full queue, cancelled clients, drain", async () => {
  await withEngine({ maxSequences: 1, maxQueue: 1 }, (engine) =>
    Effect.gen(function* () {
      const long = greedy(engine, "Once upon a time", 100);
      const a = yield* engine.submit({ ...long, stopAtEos: false });
      // Let `a` take the only slot, then fill the one queue place.
      const firstOfA = yield* Stream.runCollect(Stream.take(a, 1));
      assert.equal(firstOfA.length, 1);
      // `a` was cancelled by take(1): its slot frees at the next turn.
      const b = yield* engine.submit({ ...long, stopAtEos: false });
      const c = yield* engine.submit({ ...long, stopAtEos: false }).pipe(Effect.either);
      if (Either.isRight(c)) {
        // b was admitted before c arrived; the queue had room. Fill it again.
        const d = yield* engine.submit({ ...long, stopAtEos: false }).pipe(Effect.either);
        assert.ok(Either.isLeft(d) && d.left._tag === "QueueFull", "the second waiter is refused");
      } else {
        assert.equal(c.left._tag, "QueueFull");
      }
      const bTokens = yield* Stream.runCollect(Stream.take(b, 5));
      assert.equal(bTokens.length, 5);
      // Drain: in-flight work finishes, new work is refused.
      const short = yield* engine.submit(greedy(engine, "The cat", 8));
      const draining = yield* Effect.fork(engine.drain(30_000));
      yield* Effect.sleep("10 millis");
      const refused = yield* engine.submit(greedy(engine, "x", 2)).pipe(Effect.either);
      assert.ok(Either.isLeft(refused) && refused.left._tag === "EngineUnavailable");
      const shortTokens = yield* Stream.runCollect(short);
      assert.ok(shortTokens.length >= 1 && shortTokens.length <= 8);
      yield* Fiber.join(draining);
      assert.equal((yield* engine.health).state, "stopped");
    }));
});
