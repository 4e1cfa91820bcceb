/**
 * Gemma 2: a tiny random model in genuine HF layout (gemma2 config.json, pre/post feed-forward
 * and post-attention norms, tied head) on the GPU at tp 1, 2 and 4 (kv heads replicated),
 * decoding and prefilling, against the CPU reference. Every feature is checked to matter: each
 * of (1 + w) norms, the √dim embedding scale, the sandwich norms, GeGLU, the attention soft cap,
 * query_pre_attn_scalar and the even-layer window changes the greedy tokens; the final soft cap
 * is monotonic, so it cannot, and is checked to change the logits instead.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import type { LlamaConfig } from "../models/config.ts";
import { openHuggingFace } from "../models/huggingface.ts";
import { type LlamaWeights, ReferenceLlama } from "../models/reference.ts";
import { encodeSafetensors } from "../models/safetensors.ts";
import { hfTensors, makeWeights, withHfModel } from "./fixtures/hf_model.ts";
import { assertChangesGreedy, assertGpuMatches, patchConfig } from "./fixtures/hf_family.ts";
import { maxAbsDiff, randomFloats } from "./tolerance.ts";

const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9, 33, 2, 50, 11];
const WINDOW = 3;
const QUERY_SCALAR = 2;
const ATTENTION_CAP = 1;
const FINAL_CAP = 2;

/** The config.json fields of a Gemma 2 checkpoint, with small caps so that they bite. */
const gemmaJson = (config: LlamaConfig) => ({
  architectures: ["Gemma2ForCausalLM"],
  model_type: "gemma2",
  head_dim: config.headDim,
  hidden_act: "gelu_pytorch_tanh",
  hidden_activation: "gelu_pytorch_tanh",
  query_pre_attn_scalar: QUERY_SCALAR,
  attn_logit_softcapping: ATTENTION_CAP,
  final_logit_softcapping: FINAL_CAP,
  sliding_window: WINDOW,
  attention_bias: false,
  tie_word_embeddings: true,
});

/** What the family should read from that config.json. */
const gemmaFeatures = (config: LlamaConfig): Partial<LlamaConfig> => ({
  mlpActivation: "gelu_tanh",
  normWeightOffset: true,
  embeddingScale: Math.sqrt(config.dim),
  sandwichNorms: true,
  attentionScale: 1 / Math.sqrt(QUERY_SCALAR),
  attentionSoftcap: ATTENTION_CAP,
  finalLogitSoftcap: FINAL_CAP,
  slidingWindow: WINDOW,
  slidingWindowLayers: "even",
});

Deno.test("gemma2: an HF directory on the GPU at tp 1, 2, 4 equals the CPU reference, and every feature changes the output", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: true }, async ({ dir, bin, config }) => {
    await patchConfig(dir, gemmaJson(config));
    // Gemma stores norm weights as offsets from one: small values, so (1 + w) differs from w.
    const weights = makeWeights(config, "F32");
    const offset = (seed: number) => randomFloats(config.dim, seed, 0.3);
    [...weights].forEach(([name, w], i) => {
      if (w.length === config.dim && /norm$/.test(name)) weights.set(name, offset(600 + i));
    });
    const postNorms = Array.from({ length: config.nLayers }, (_, l) => ({
      postAttentionNorm: offset(700 + l),
      postFfnNorm: offset(750 + l),
    }));
    postNorms.forEach((n, l) => {
      weights.set(`layers.${l}.post_attention_norm`, n.postAttentionNorm);
      weights.set(`layers.${l}.post_ffn_norm`, n.postFfnNorm);
    });
    const tensors = hfTensors({ ...config, family: "gemma2", sandwichNorms: true }, weights, "F32");
    for (const hf of ["pre_feedforward_layernorm", "post_feedforward_layernorm"]) {
      assert.ok(tensors.some((t) => t.name === `model.layers.1.${hf}.weight`), hf);
    }
    await Deno.writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors));
    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    for (const [key, value] of Object.entries(gemmaFeatures(config))) {
      assert.equal(opened.config[key as keyof LlamaConfig], value, key);
    }

    // The reference reads the same values from the llama2.c twin (Meta order), norms replaced.
    const plain = await Effect.runPromise(ReferenceLlama.load(bin));
    const layerNorms = (l: number) => ({
      attentionNorm: weights.get(`layers.${l}.attention_norm`)!,
      ffnNorm: weights.get(`layers.${l}.ffn_norm`)!,
    });
    const gemmaWeights = {
      ...plain.weights,
      norm: weights.get("norm")!,
      layers: plain.weights.layers.map((layer, l) => ({
        ...layer,
        ...layerNorms(l),
        ...postNorms[l],
      })),
    };
    const logitsOf = async (patch: Partial<LlamaConfig>, w: LlamaWeights = gemmaWeights) => {
      const model = await Effect.runPromise(
        ReferenceLlama.make({ ...plain.config, ...gemmaFeatures(config), ...patch }, w),
      );
      return PROMPT.map((token, pos) => model.forward(token, pos));
    };
    const want = await logitsOf({});
    const without = {
      "(1 + w) norms": { normWeightOffset: false },
      "the embedding scale": { embeddingScale: undefined },
      "GeGLU": { mlpActivation: "silu" },
      "the attention soft cap": { attentionSoftcap: undefined },
      "query_pre_attn_scalar": { attentionScale: undefined },
      "the window": { slidingWindow: undefined },
      "the window on even layers only": { slidingWindowLayers: "all" },
    } as const;
    for (const [feature, patch] of Object.entries(without)) {
      assertChangesGreedy(want, await logitsOf(patch), feature);
    }
    const noPostNorms = {
      ...gemmaWeights,
      layers: gemmaWeights.layers.map(({ postAttentionNorm: _, postFfnNorm: __, ...rest }) => rest),
    };
    assertChangesGreedy(want, await logitsOf({ sandwichNorms: false }, noPostNorms), "post norms");
    const uncapped = await logitsOf({ finalLogitSoftcap: undefined });
    assert.ok(
      want.every((l, pos) => maxAbsDiff(l, uncapped[pos]) > 0.1),
      "the final soft cap changes every position's logits",
    );
    await assertGpuMatches(dir, { tps: [1, 2, 4], prompt: PROMPT, want, what: "gemma2" });
  }));

Deno.test("gemma2: options Tessera does not run are refused by name", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: true }, async ({ dir, config }) => {
    const refusals: [Record<string, unknown>, RegExp][] = [
      [{ hidden_activation: "gelu" }, /hidden_activation = "gelu" is not supported for gemma2/],
      [{ attn_logit_softcapping: -1 }, /attn_logit_softcapping = -1 must be a positive number/],
      [{ query_pre_attn_scalar: null }, /query_pre_attn_scalar = null/],
      [
        { layer_types: ["full_attention", "full_attention"] },
        /layer_types = .* is not supported for gemma2/,
      ],
    ];
    for (const [patch, message] of refusals) {
      await patchConfig(dir, { ...gemmaJson(config), ...patch });
      const exit = await Effect.runPromiseExit(Effect.scoped(openHuggingFace(dir)));
      assert.ok(exit._tag === "Failure", JSON.stringify(patch));
      assert.match(String(exit.cause), message);
    }
  }));
