/**
 * Qwen3: a Llama with a per-head RMSNorm of q and k before RoPE (`q_norm`, `k_norm`, [head_dim]
 * each, replicated over ranks). A tiny random model in HF layout on the GPU at tp 1, 2 and 4 (kv
 * heads replicated), decoding and prefilling, against the CPU reference; the norms change the
 * greedy tokens, so the test fails if they are skipped.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import { openHuggingFace } from "../models/huggingface.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { encodeSafetensors } from "../models/safetensors.ts";
import { hfTensors, makeWeights, withHfModel } from "./fixtures/hf_model.ts";
import { assertChangesGreedy, assertGpuMatches } from "./fixtures/hf_family.ts";
import { randomFloats } from "./tolerance.ts";

const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9, 33, 2];

Deno.test("qwen3: per-head q/k norms from an HF directory on the GPU at tp 1, 2, 4 equal the CPU reference", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: true }, async ({ dir, bin, config }) => {
    const configPath = join(dir, "config.json");
    const json = JSON.parse(await Deno.readTextFile(configPath));
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        ...json,
        architectures: ["Qwen3ForCausalLM"],
        model_type: "qwen3",
        head_dim: config.headDim,
        attention_bias: false,
      }),
    );
    // The norms' weights are per head dimension, so HF's rotate_half permutation of q/k rows
    // reorders them too: store them permuted, as an HF export would.
    const weights = makeWeights(config, "F32");
    const norms = new Map<string, Float32Array>();
    const hfWeights = new Map(weights);
    const half = config.headDim / 2;
    const toHalf = (w: Float32Array) =>
      Float32Array.from({ length: w.length }, (_, i) => w[i < half ? 2 * i : 2 * (i - half) + 1]);
    for (let l = 0; l < config.nLayers; l++) {
      const qNorm = randomFloats(config.headDim, 800 + l, 0.9).map((v) => 1 + v);
      const kNorm = randomFloats(config.headDim, 900 + l, 0.9).map((v) => 1 + v);
      norms.set(`${l}.q`, qNorm).set(`${l}.k`, kNorm);
      hfWeights.set(`layers.${l}.q_norm`, toHalf(qNorm));
      hfWeights.set(`layers.${l}.k_norm`, toHalf(kNorm));
    }
    const tensors = hfTensors({ ...config, family: "qwen3", qkNorm: true }, hfWeights, "F32");
    assert.equal(
      tensors.filter((t) => /_norm\.weight$/.test(t.name) && /self_attn/.test(t.name)).length,
      2 * config.nLayers,
    );
    await Deno.writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors));
    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    assert.equal(opened.config.qkNorm, true);

    const plain = await Effect.runPromise(ReferenceLlama.load(bin));
    const normed = await Effect.runPromise(ReferenceLlama.make(
      { ...plain.config, qkNorm: true },
      {
        ...plain.weights,
        layers: plain.weights.layers.map((layer, l) => ({
          ...layer,
          qNorm: norms.get(`${l}.q`),
          kNorm: norms.get(`${l}.k`),
        })),
      },
    ));
    const want = PROMPT.map((token, pos) => normed.forward(token, pos));
    const without = PROMPT.map((token, pos) => plain.forward(token, pos));
    assertChangesGreedy(want, without, "the norms");
    await assertGpuMatches(dir, { tps: [1, 2, 4], prompt: PROMPT, want, what: "qwen3" });
  }));
