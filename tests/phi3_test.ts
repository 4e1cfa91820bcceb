/**
 * Phi-3: a Llama whose checkpoint fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`.
 * A tiny random model written in that layout loads on the GPU at tp 1, 2 and 4 (kv heads
 * replicated), each rank reading its own row blocks of the fused tensors, and equals the CPU
 * reference of the same (unfused) weights; Phi-3's long-context rope_scaling is refused by name.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import { openHuggingFace } from "../models/huggingface.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { encodeSafetensors, type SafetensorsInput } from "../models/safetensors.ts";
import { hfTensors, makeWeights, withHfModel } from "./fixtures/hf_model.ts";
import { assertGpuMatches, patchConfig } from "./fixtures/hf_family.ts";

const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9];

/** The HF tensors with each layer's q/k/v and gate/up fused as Phi-3 stores them. */
const fuse = (tensors: SafetensorsInput[], layers: number): SafetensorsInput[] => {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const fused = (name: string, parts: string[]): SafetensorsInput => {
    const blocks = parts.map((p) => byName.get(p)!);
    for (const p of parts) byName.delete(p);
    const data = new Float32Array(blocks.reduce((n, b) => n + b.data.length, 0));
    let at = 0;
    for (const b of blocks) {
      data.set(b.data, at);
      at += b.data.length;
    }
    const rows = blocks.reduce((n, b) => n + b.shape[0], 0);
    return { name, dtype: blocks[0].dtype, shape: [rows, blocks[0].shape[1]], data };
  };
  const out: SafetensorsInput[] = [];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      fused(
        `${p}self_attn.qkv_proj.weight`,
        ["q", "k", "v"].map((x) => `${p}self_attn.${x}_proj.weight`),
      ),
      fused(`${p}mlp.gate_up_proj.weight`, [`${p}mlp.gate_proj.weight`, `${p}mlp.up_proj.weight`]),
    );
  }
  return [...byName.values(), ...out];
};

const asPhi3 = async (dir: string, extra: Record<string, unknown> = {}) => {
  await patchConfig(dir, {
    architectures: ["Phi3ForCausalLM"],
    model_type: "phi3",
    sliding_window: null,
    ...extra,
  });
};

Deno.test("phi3: fused qkv_proj and gate_up_proj on the GPU at tp 1, 2, 4 equal the CPU reference", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir, bin, config }) => {
    await asPhi3(dir);
    const tensors = fuse(hfTensors(config, makeWeights(config, "F32"), "F32"), config.nLayers);
    assert.ok(!tensors.some((t) => t.name.endsWith("q_proj.weight")));
    await Deno.writeFile(join(dir, "model.safetensors"), encodeSafetensors(tensors));
    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    assert.equal(opened.config.family, "phi3");

    const reference = await Effect.runPromise(ReferenceLlama.load(bin));
    const want = PROMPT.map((token, pos) => reference.forward(token, pos));
    await assertGpuMatches(dir, { tps: [1, 2, 4], prompt: PROMPT, want, what: "phi3" });
  }));

Deno.test("phi3: longrope scaling and a partial rotary factor are refused by name", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir }) => {
    for (
      const [extra, message] of [
        [
          { rope_scaling: { type: "longrope", long_factor: [1], short_factor: [1] } },
          /rope_scaling type "longrope" is not supported/,
        ],
        [
          { rope_scaling: null, partial_rotary_factor: 0.5 },
          /partial_rotary_factor = 0.5 is not supported/,
        ],
      ] as const
    ) {
      await asPhi3(dir, extra);
      const exit = await Effect.runPromiseExit(Effect.scoped(openHuggingFace(dir)));
      assert.ok(exit._tag === "Failure");
      assert.match(String(exit.cause), message);
    }
  }));
