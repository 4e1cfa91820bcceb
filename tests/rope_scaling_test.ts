/**
 * RoPE scaling (`rope_scaling` of Llama 3.1+ and others): the frequency rules against their
 * definitions, config errors by field, and HF models with each rule on the GPU at tp 1 and 2
 * against the CPU reference, where each rule changes the greedy tokens of the unscaled model.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import { configFromHuggingFace } from "../models/huggingface.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { parseRopeScaling, ropeFrequencies, type RopeScaling } from "../models/rope_scaling.ts";
import { HF_TEST_CONFIG, withHfModel } from "./fixtures/hf_model.ts";
import { assertChangesGreedy, assertGpuMatches } from "./fixtures/hf_family.ts";
import { assertClose } from "./tolerance.ts";

const THETA = 10000;
const HEAD = 8; // pairs 0..3: inverse frequencies 1, 0.1, 0.01, 0.001
const base = ropeFrequencies(THETA, HEAD).inverse;

const parsed = (json: unknown, maxPositions = 32): RopeScaling => {
  const scaling = parseRopeScaling(json, maxPositions);
  if (typeof scaling === "string") assert.fail(scaling);
  return scaling;
};

Deno.test("rope scaling: each rule's table from its definition", () => {
  assertClose(Float32Array.from(base), Float32Array.from([1, 0.1, 0.01, 0.001]), {
    atol: 1e-9,
    rtol: 0,
    what: "default",
  });
  const linear = ropeFrequencies(THETA, HEAD, parsed({ rope_type: "linear", factor: 4 }));
  assert.deepEqual([...linear.inverse], [...base].map((f) => f / 4));

  // llama3 with an original context of 8 and factors 1/4: wavelength 2π (pair 0) lies between
  // 8/4 and 8/1 and is blended; pairs 1-3 (wavelengths > 8) are divided by the factor.
  const llama3 = ropeFrequencies(
    THETA,
    HEAD,
    parsed({
      rope_type: "llama3",
      factor: 4,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8,
    }),
  );
  const smooth = (8 / (2 * Math.PI) - 1) / (4 - 1);
  assert.ok(Math.abs(llama3.inverse[0] - ((1 - smooth) / 4 + smooth)) < 1e-12);
  assert.deepEqual([...llama3.inverse].slice(1), [...base].slice(1).map((f) => f / 4));
  assert.equal(llama3.attentionFactor, 1);
  // With a long original context every wavelength is short: nothing changes (Llama 3.1's own
  // factors on a model that never reaches them).
  const untouched = ropeFrequencies(
    THETA,
    HEAD,
    parsed({
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 1e9,
    }),
  );
  assert.deepEqual([...untouched.inverse], [...base]);

  // dynamic NTK: a new base, the same shape (vLLM's fixed form at the served length).
  const dynamic = ropeFrequencies(
    THETA,
    HEAD,
    parsed({ type: "dynamic", factor: 2, original_max_position_embeddings: 16 }),
    32,
  );
  const newBase = THETA * Math.pow(2 * 32 / 16 - 1, HEAD / (HEAD - 2));
  dynamic.inverse.forEach((f, i) =>
    assert.ok(Math.abs(f - Math.pow(newBase, -2 * i / HEAD)) < 1e-15)
  );

  // yarn: pairs below the fast correction dim extrapolate (unchanged), above the slow one they
  // interpolate (÷ factor); cos/sin scale by 0.1·ln(factor) + 1.
  const yarn = ropeFrequencies(
    THETA,
    HEAD,
    parsed({ rope_type: "yarn", factor: 4, original_max_position_embeddings: 16 }),
  );
  const correction = (rotations: number) =>
    HEAD * Math.log(16 / (rotations * 2 * Math.PI)) / (2 * Math.log(THETA));
  const [low, high] = [Math.max(0, Math.floor(correction(32))), Math.ceil(correction(1))];
  yarn.inverse.forEach((f, i) => {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high === low ? 0.001 : high - low)));
    const want = (base[i] / 4) * ramp + base[i] * (1 - ramp);
    assert.ok(Math.abs(f - want) < 1e-15, `yarn pair ${i}`);
  });
  assert.ok(Math.abs(yarn.attentionFactor - (0.1 * Math.log(4) + 1)) < 1e-15);
  const mscaled = parsed({
    rope_type: "yarn",
    factor: 4,
    mscale: 1,
    mscale_all_dim: 0.5,
  }) as Extract<RopeScaling, { type: "yarn" }>;
  assert.ok(
    Math.abs(mscaled.attentionFactor - (0.1 * Math.log(4) + 1) / (0.05 * Math.log(4) + 1)) < 1e-15,
  );
});

Deno.test("rope scaling: unsupported types and bad fields are refused by name", () => {
  const cases: [unknown, RegExp][] = [
    [{ rope_type: "longrope", factor: 2 }, /rope_scaling type "longrope" is not supported/],
    [{ rope_type: "linear" }, /rope_scaling\.factor is missing/],
    [
      { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 },
      /original_max_position_embeddings is missing/,
    ],
    [{
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 4,
      high_freq_factor: 1,
      original_max_position_embeddings: 8,
    }, /high_freq_factor 1 must exceed low_freq_factor 4/],
    [{ rope_type: "yarn", factor: "4" }, /rope_scaling\.factor = "4" must be a number/],
    [
      { rope_type: "yarn", factor: 4, truncate: "yes" },
      /rope_scaling\.truncate = "yes" must be a boolean/,
    ],
    [{ rope_type: "dynamic", factor: 1 }, /rope_scaling\.factor = 1 must be a number > 1/],
    ["llama3", /rope_scaling = "llama3" must be an object/],
  ];
  for (const [json, message] of cases) {
    const got = parseRopeScaling(json, 32);
    assert.equal(typeof got, "string", JSON.stringify(json));
    assert.match(got as string, message);
  }
  // And through config.json, as a LoadError naming the file.
  const exit = Effect.runSyncExit(configFromHuggingFace("config.json", {
    model_type: "llama",
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    vocab_size: 16,
    max_position_embeddings: 32,
    rope_scaling: { rope_type: "su", factor: 2 },
  }));
  assert.ok(exit._tag === "Failure");
  assert.match(String(exit.cause), /config\.json.*rope_scaling type "su" is not supported/s);
});

/** Tokens fed one by one; long enough for the scaled rotations to matter. */
const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9, 33, 2, 50, 11, 28, 44, 3, 60];

/** Each rule with factors that move every pair at these 16 positions (original context 4). */
const RULES: Record<string, Record<string, unknown>> = {
  linear: { rope_type: "linear", factor: 4 },
  dynamic: { rope_type: "dynamic", factor: 4, original_max_position_embeddings: 4 },
  llama3: {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 4,
  },
  yarn: { rope_type: "yarn", factor: 8, original_max_position_embeddings: 4 },
};

for (const [rule, json] of Object.entries(RULES)) {
  Deno.test(`rope scaling (${rule}): an HF model on the GPU at tp 1 and 2 equals the CPU reference`, () =>
    withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir, bin }) => {
      const configPath = join(dir, "config.json");
      const config = JSON.parse(await Deno.readTextFile(configPath));
      await Deno.writeTextFile(configPath, JSON.stringify({ ...config, rope_scaling: json }));
      const plain = await Effect.runPromise(ReferenceLlama.load(bin));
      const scaling = parsed(json, HF_TEST_CONFIG.seqLen);
      const scaled = await Effect.runPromise(
        ReferenceLlama.make({ ...plain.config, ropeScaling: scaling }, plain.weights),
      );
      const want = PROMPT.map((token, pos) => scaled.forward(token, pos));
      const unscaled = PROMPT.map((token, pos) => plain.forward(token, pos));
      assertChangesGreedy(want, unscaled, rule);
      await assertGpuMatches(dir, { tps: [1, 2], prompt: PROMPT, want, what: rule });
    }));
}
