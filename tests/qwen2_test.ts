/**
 * Qwen2 (and Qwen2.5): a Llama with biases on the q, k and v projections. A tiny random model in
 * genuine HF layout (config.json with model_type qwen2, safetensors with `*.bias` tensors in HF's
 * q/k order) on the GPU at tp 1, 2 and 4 (kv heads replicated) against the CPU reference; the
 * biases change the greedy tokens, so the test fails if they are dropped.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import { kvDim, qDim } from "../models/config.ts";
import { openHuggingFace } from "../models/huggingface.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { encodeSafetensors } from "../models/safetensors.ts";
import { hfPermute, hfTensors, makeWeights, withHfModel } from "./fixtures/hf_model.ts";
import { assertChangesGreedy, assertGpuMatches } from "./fixtures/hf_family.ts";
import { randomFloats } from "./tolerance.ts";

const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9, 33, 2];
const THETA = 1_000_000; // Qwen2's rope_theta

Deno.test("qwen2: q/k/v biases from an HF directory on the GPU at tp 1, 2, 4 equal the CPU reference", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: true }, async ({ dir, bin, config }) => {
    // Rewrite the directory as Qwen2: its config, and its weights with the three biases.
    const configPath = join(dir, "config.json");
    const json = JSON.parse(await Deno.readTextFile(configPath));
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        ...json,
        architectures: ["Qwen2ForCausalLM"],
        model_type: "qwen2",
        rope_theta: THETA,
        use_sliding_window: false,
        sliding_window: 4096,
      }),
    );
    const weights = makeWeights(config, "F32");
    const metaBiases = new Map<string, Float32Array>();
    const hfWeights = new Map(weights);
    for (let l = 0; l < config.nLayers; l++) {
      const bq = randomFloats(qDim(config), 500 + l, 0.8);
      const bk = randomFloats(kvDim(config), 600 + l, 0.8);
      const bv = randomFloats(kvDim(config), 700 + l, 0.8);
      metaBiases.set(`${l}.bq`, bq).set(`${l}.bk`, bk).set(`${l}.bv`, bv);
      // HF stores q/k rows (and so their biases) permuted for rotate_half.
      hfWeights.set(`layers.${l}.bq`, hfPermute(bq, config.nHeads, qDim(config), 1));
      hfWeights.set(`layers.${l}.bk`, hfPermute(bk, config.nKvHeads, kvDim(config), 1));
      hfWeights.set(`layers.${l}.bv`, bv);
    }
    const tensors = hfTensors(
      { ...config, family: "qwen2", attentionBias: true },
      hfWeights,
      "F32",
    );
    assert.equal(tensors.filter((t) => t.name.endsWith(".bias")).length, 3 * config.nLayers);
    await Deno.writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors));

    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    assert.equal(opened.config.attentionBias, true);
    assert.equal(opened.config.ropeTheta, THETA);

    const plain = await Effect.runPromise(ReferenceLlama.load(bin));
    const refConfig = { ...plain.config, ropeTheta: THETA };
    const biased = await Effect.runPromise(ReferenceLlama.make(
      { ...refConfig, attentionBias: true },
      {
        ...plain.weights,
        layers: plain.weights.layers.map((layer, l) => ({
          ...layer,
          bq: metaBiases.get(`${l}.bq`),
          bk: metaBiases.get(`${l}.bk`),
          bv: metaBiases.get(`${l}.bv`),
        })),
      },
    ));
    const unbiased = await Effect.runPromise(ReferenceLlama.make(refConfig, plain.weights));
    const want = PROMPT.map((token, pos) => biased.forward(token, pos));
    const without = PROMPT.map((token, pos) => unbiased.forward(token, pos));
    assertChangesGreedy(want, without, "the biases");
    await assertGpuMatches(dir, { tps: [1, 2, 4], prompt: PROMPT, want, what: "qwen2" });
  }));

Deno.test("qwen2: a missing bias is a LoadError naming the tensor", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: true }, async ({ dir }) => {
    const configPath = join(dir, "config.json");
    const json = JSON.parse(await Deno.readTextFile(configPath));
    await Deno.writeTextFile(configPath, JSON.stringify({ ...json, model_type: "qwen2" }));
    const exit = await Effect.runPromiseExit(Effect.scoped(openHuggingFace(dir)));
    assert.ok(exit._tag === "Failure");
    assert.match(String(exit.cause), /model\.layers\.0\.self_attn\.q_proj\.bias/);
  }));
