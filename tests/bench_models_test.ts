/** The benchmark's synthetic checkpoints load through the llama2.c reader with their shape. */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { openLlama2c, readLlama2cHeader } from "../models/llama2c.ts";
import {
  checkpointBytes,
  type ModelShape,
  shapeConfig,
  STORIES110M,
  STORIES15M,
  syntheticCheckpoint,
  writeSyntheticCheckpoint,
} from "../bench/synthetic_model.ts";

const TINY: ModelShape = {
  name: "tiny",
  dim: 16,
  hiddenDim: 40,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 50,
  seqLen: 8,
};

Deno.test("a synthetic checkpoint loads as its shape, with finite small weights", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tiny.bin`;
    await writeSyntheticCheckpoint(path, TINY, 7, 100); // small chunks: tensors span several
    assert.deepEqual((await Deno.stat(path)).size, checkpointBytes(TINY));
    const { config } = await Effect.runPromise(readLlama2cHeader(path));
    assert.deepEqual(config, shapeConfig(TINY));
    const { wq, norm, embedding } = await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
      const { source } = yield* openLlama2c(path);
      return {
        wq: yield* source.rows("layers.1.wq", 0, 16),
        norm: yield* source.vector("layers.0.ffn_norm", 16),
        embedding: yield* source.rows("tok_embeddings", 0, 50),
      };
    })));
    assert.ok(wq.every((x) => Number.isFinite(x) && Math.abs(x) < 0.04));
    assert.ok(wq.some((x) => x !== 0));
    assert.ok(norm.every((x) => x === 1));
    assert.ok(embedding.every((x) => Math.abs(x) < 0.04));

    // The same seed gives the same bytes; the cache reuses a complete file.
    const again = `${dir}/again.bin`;
    await writeSyntheticCheckpoint(again, TINY, 7);
    assert.deepEqual(await Deno.readFile(again), await Deno.readFile(path));
    const first = await syntheticCheckpoint(TINY, 7, dir);
    const second = await syntheticCheckpoint(TINY, 7, dir);
    assert.deepEqual([first.generated, second.generated], [true, false]);
    assert.deepEqual(await Deno.readFile(second.path), await Deno.readFile(path));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the benchmark shapes are stories15M's and stories110M's", () => {
  assert.deepEqual(checkpointBytes(STORIES15M), 60_816_028);
  assert.deepEqual(shapeConfig(STORIES110M).headDim, 64);
  assert.deepEqual(checkpointBytes(STORIES110M), 438_381_596);
});
