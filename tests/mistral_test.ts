/**
 * Mistral: a Llama whose attention slides (config.json `sliding_window`, as Mistral 7B v0.1 has).
 * A tiny random model in HF layout with a window of 3 on the GPU at tp 1 and 2, decoding token by
 * token and prefilling the whole prompt at once, against the CPU reference; the window changes
 * the greedy tokens, so the test fails if it is ignored. A window of null (v0.2 on) is a Llama.
 */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { openHuggingFace } from "../models/huggingface.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { withHfModel } from "./fixtures/hf_model.ts";
import { assertChangesGreedy, assertGpuMatches, patchConfig } from "./fixtures/hf_family.ts";

const PROMPT = [1, 40, 7, 63, 22, 5, 17, 9, 33, 2, 50, 11];
const WINDOW = 3;

const asMistral = async (dir: string, slidingWindow: number | null) => {
  await patchConfig(dir, {
    architectures: ["MistralForCausalLM"],
    model_type: "mistral",
    sliding_window: slidingWindow,
  });
};

Deno.test("mistral: a sliding window from an HF directory on the GPU at tp 1, 2 equals the CPU reference", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir, bin }) => {
    await asMistral(dir, WINDOW);
    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    assert.equal(opened.config.slidingWindow, WINDOW);
    const plain = await Effect.runPromise(ReferenceLlama.load(bin));
    const windowed = await Effect.runPromise(
      ReferenceLlama.make({ ...plain.config, slidingWindow: WINDOW }, plain.weights),
    );
    const want = PROMPT.map((token, pos) => windowed.forward(token, pos));
    const full = PROMPT.map((token, pos) => plain.forward(token, pos));
    assertChangesGreedy(want, full, "the window");
    await assertGpuMatches(dir, { tps: [1, 2], prompt: PROMPT, want, what: "mistral" });
  }));

Deno.test("mistral: sliding_window null is a Llama; a bad one is refused by name", () =>
  withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir }) => {
    await asMistral(dir, null);
    const opened = await Effect.runPromise(Effect.scoped(openHuggingFace(dir)));
    assert.equal(opened.config.slidingWindow, undefined);
    await asMistral(dir, -4 as unknown as number);
    const exit = await Effect.runPromiseExit(Effect.scoped(openHuggingFace(dir)));
    assert.ok(exit._tag === "Failure");
    assert.match(String(exit.cause), /sliding_window = -4 must be a positive integer or null/);
  }));
