/**
 * The memory plan against what ranks really allocate (stories260K at tp 1 and 2, f32 and q8_0
 * weights, f32 and f16 caches), the context it serves (cut by the budget and the binding limit,
 * or refused naming the smallest tp that fits), and `maxModelLen` through a real load.
 */
import assert from "node:assert/strict";
import { Effect, Either, Layer } from "effect";
import { Transport } from "../actors/transport.ts";
import { InProcessTransport } from "../ranks/transports.ts";
import { readLlama2cHeader } from "../models/llama2c.ts";
import { LlamaModel } from "../models/llama.ts";
import { type MemoryPlanOptions, planMemory } from "../models/memory_plan.ts";
import type { LlamaConfig } from "../models/config.ts";
import { STORIES260K_PATH } from "../assets/paths.ts";

const stories260K = () =>
  Effect.runPromise(Effect.map(readLlama2cHeader(STORIES260K_PATH), (h) => h.config));

const OPTIONS: MemoryPlanOptions = {
  weights: "f32",
  kvCacheDtype: "f32",
  sequences: 1,
  maxBatchTokens: 64,
};

const plan = (config: LlamaConfig, tp: number, options: Partial<MemoryPlanOptions> = {}) =>
  Effect.runPromise(Effect.either(planMemory(config, tp, { ...OPTIONS, ...options })));

Deno.test("memory plan: weights and KV cache are the bytes the ranks allocate", async () => {
  for (
    const [tp, weights, kvCacheDtype] of [
      [1, "f32", "f32"],
      [2, "f32", "f16"],
      [2, "q8_0", "f32"],
    ] as const
  ) {
    const model = await Effect.runPromise(
      Effect.scoped(LlamaModel.load({
        source: { format: "llama2c", path: STORIES260K_PATH },
        tp,
        weights,
        kvCacheDtype,
        maxSequences: 3,
      })).pipe(Effect.provide(InProcessTransport())),
    );
    const planned = model.memoryPlan;
    assert.equal(planned.context, 512);
    assert.equal(planned.contextLimitedBy, undefined);
    assert.deepEqual(planned.ranks.map((r) => r.weights), model.weightBytesPerRank, weights);
    assert.deepEqual(planned.ranks.map((r) => r.kvCache), model.kvCacheBytesPerRank);
    for (const r of planned.ranks) {
      assert.equal(r.total, r.weights + r.kvCache + r.activations);
      assert.ok(r.activations > 0);
    }
  }
});

Deno.test("memory plan: the context is cut to what fits, and a context that does not fit names a tp that would", async () => {
  const config = await stories260K();
  const full = Either.getOrThrow(await plan(config, 1));
  const rank = full.ranks[0];
  const perPosition = rank.kvCache / full.context;
  // A budget with room for 100 positions serves 100, and says why.
  const budget = rank.weights + rank.activations + 100 * perPosition;
  const cut = Either.getOrThrow(await plan(config, 1, { budgetPerRank: budget }));
  assert.equal(cut.context, 100);
  assert.equal(cut.contextLimitedBy, "budget");
  // One layer's K cache is one binding: with 100 sequences, a limit the size of the embedding
  // shard (which must fit too) holds only a few positions per layer.
  const embedding = 4 * 128 * Math.ceil(config.vocabSize / 128) * config.dim;
  const perLayer = 100 * config.nKvHeads * config.headDim * 4;
  const bound = Either.getOrThrow(
    await plan(config, 1, { sequences: 100, bindingLimit: embedding }),
  );
  assert.equal(bound.context, Math.floor(embedding / perLayer));
  assert.equal(bound.contextLimitedBy, "binding");
  // Asked for, it is served as asked, or refused naming the smallest tp at which it fits.
  const asked = Either.getOrThrow(await plan(config, 1, { maxModelLen: 128 }));
  assert.equal(asked.context, 128);
  assert.equal(asked.contextLimitedBy, "request");
  const refused = await plan(config, 1, { maxModelLen: 512, budgetPerRank: budget });
  assert.ok(Either.isLeft(refused));
  assert.equal(refused.left._tag, "ConfigError");
  assert.match(refused.left.message, /does not fit at tp 1: rank 0 needs .* for a context of 512/);
  assert.match(refused.left.message, /tp 2 would fit/);
  const tooLong = await plan(config, 1, { maxModelLen: 513 });
  assert.ok(Either.isLeft(tooLong));
  assert.match(
    tooLong.left.message,
    /max model length 513 is more than the model's context of 512/,
  );
  // A weight shard over one binding: refused, naming the tp whose shards fit.
  const overBinding = await plan(config, 1, { bindingLimit: embedding - 1 });
  assert.ok(Either.isLeft(overBinding));
  assert.match(overBinding.left.message, /rank 0's embedding shard takes .* over the adapter's/);
  assert.match(overBinding.left.message, /tp 2 would fit/);
  const nothing = await plan(config, 1, { budgetPerRank: rank.weights });
  assert.ok(Either.isLeft(nothing));
});

Deno.test("memory plan: maxModelLen sizes the KV cache and the served context", async () => {
  const model = await Effect.runPromise(
    Effect.scoped(LlamaModel.load({
      source: { format: "llama2c", path: STORIES260K_PATH },
      tp: 2,
      kvCacheDtype: "f32",
      maxModelLen: 64,
    })).pipe(Effect.provide(InProcessTransport())),
  );
  assert.equal(model.config.seqLen, 64);
  const config = await stories260K();
  // 64 of 512 positions: an eighth of the full cache (5 layers × K and V × 2 kv heads × 8).
  const fullCache = 512 * config.nLayers * 2 * (config.nKvHeads / 2) * config.headDim * 4;
  assert.deepEqual(model.kvCacheBytesPerRank, [fullCache / 8, fullCache / 8]);
});

Deno.test("memory plan: a maxModelLen past the model's context is refused before any rank starts", async () => {
  const spawned: number[] = [];
  const refusing = Layer.succeed(Transport, {
    name: "refusing",
    spawn: (tp: number) => {
      spawned.push(tp);
      return Effect.die(new Error("no rank may start"));
    },
  });
  const result = await Effect.runPromise(
    Effect.either(Effect.scoped(LlamaModel.load({
      source: { format: "llama2c", path: STORIES260K_PATH },
      tp: 2,
      maxModelLen: 1000,
    }))).pipe(Effect.provide(refusing)),
  );
  assert.ok(Either.isLeft(result));
  assert.equal(result.left._tag, "ConfigError");
  assert.match(
    result.left.message,
    /max model length 1000 is more than the model's context of 512/,
  );
  assert.deepEqual(spawned, []);
});
