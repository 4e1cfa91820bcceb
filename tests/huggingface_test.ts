/**
 * Hugging Face directories as a second weight format: a small random Llama written both as a
 * genuine HF directory (q/k rows permuted as convert_llama_weights_to_hf.py does, sharded
 * safetensors in F32/F16/BF16, tokenizer.json) and as a llama2.c `.bin` of the same weights must
 * give the same logits and the same tensor-parallel shards; broken files fail with LoadError.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Effect } from "effect";
import type { LlamaConfig } from "../models/config.ts";
import { LoadError } from "../models/errors.ts";
import {
  configFromHuggingFace,
  huggingFaceTensors,
  loadHuggingFaceTokenizer,
  openHuggingFace,
} from "../models/huggingface.ts";
import { openLlama2c } from "../models/llama2c.ts";
import { planLlama } from "../models/plan.ts";
import { type LlamaWeights, ReferenceLlama } from "../models/reference.ts";
import {
  bf16ToF32,
  decodeElements,
  encodeElements,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  readSafetensorsRows,
} from "../models/safetensors.ts";
import {
  readEmbeddingShard,
  readHeadShards,
  readLayerShards,
  transpose,
  type WeightSource,
} from "../models/shards.ts";
import { readWhole, ShardReader } from "../layers/blocks/weights.ts";
import type { RankPlan } from "../models/plan.ts";
import { openForRead } from "../models/tensor_reader.ts";
import {
  hfPermute,
  type HfVariant,
  shardName,
  TOKENIZER_CONFIG,
  tokenizerJson,
  VOCAB,
  withHfModel,
  writeJson,
} from "./fixtures/hf_model.ts";
import { assertClose, maxAbsDiff, randomFloats } from "./tolerance.ts";

const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect);
const failureOf = <A, E>(effect: Effect.Effect<A, E>): Promise<E> =>
  Effect.runPromise(Effect.flip(effect));

/** Everything rank `plan.rank` reads, as the rank program reads it. */
const readRankShards = (source: WeightSource, config: LlamaConfig, plan: RankPlan) =>
  Effect.gen(function* () {
    const reader = new ShardReader(source);
    const embedding = yield* readWhole(readEmbeddingShard(reader, config, plan));
    const layers = [];
    for (let l = 0; l < config.nLayers; l++) {
      const s = yield* readLayerShards(reader, config, plan, l);
      layers.push({
        ...s,
        qkv: { ...s.qkv, weight: yield* readWhole(s.qkv.weight) },
        o: yield* readWhole(s.o),
        gateUp: yield* readWhole(s.gateUp),
        down: yield* readWhole(s.down),
      });
    }
    const head = yield* readHeadShards(reader, config, plan);
    return { embedding, layers, norm: head.norm, output: yield* readWhole(head.output) };
  });

/** Columns [start, start + count) of a [rows, width] matrix. */
const columnsOf = (data: Float32Array, rows: number, start: number, count: number) => {
  const width = data.length / rows;
  const out = new Float32Array(rows * count);
  for (let r = 0; r < rows; r++) {
    out.set(data.subarray(r * width + start, r * width + start + count), r * count);
  }
  return out;
};

/** Prompt ids of every logit comparison. */
const PROMPT = [1, 40, 7, 63, 22, 5, 17];

const withModel = withHfModel;

/** Every weight of a model, whole, through a `WeightSource` (names as models/shards.ts reads). */
const readAllWeights = (
  source: WeightSource,
  config: LlamaConfig,
): Effect.Effect<LlamaWeights, LoadError> =>
  Effect.gen(function* () {
    const get = (name: string) => {
      const t = huggingFaceTensors({ ...config, sharedClassifier: false }).find((t) =>
        t.name === name
      )!;
      return t.shape.length === 1
        ? source.vector(name, t.shape[0])
        : source.rows(name, 0, t.shape[0]);
    };
    const layers = [];
    for (let l = 0; l < config.nLayers; l++) {
      const p = `layers.${l}.`;
      layers.push({
        attentionNorm: yield* get(`${p}attention_norm`),
        wq: yield* get(`${p}wq`),
        wk: yield* get(`${p}wk`),
        wv: yield* get(`${p}wv`),
        wo: yield* get(`${p}wo`),
        ffnNorm: yield* get(`${p}ffn_norm`),
        w1: yield* get(`${p}w1`),
        w2: yield* get(`${p}w2`),
        w3: yield* get(`${p}w3`),
      });
    }
    return {
      tokEmbeddings: yield* get("tok_embeddings"),
      layers,
      norm: yield* get("norm"),
      output: yield* get("output"),
    };
  });

/** Logits of PROMPT position by position. */
const promptLogits = (model: ReferenceLlama) => PROMPT.map((t, pos) => model.forward(t, pos));

// ---------------------------------------------------------------------------------------------
// Equivalence with llama2.c

const VARIANTS: HfVariant[] = [
  { dtype: "F32", shards: 2, tied: false },
  { dtype: "F16", shards: 2, tied: false },
  { dtype: "BF16", shards: 1, tied: true },
];

for (const variant of VARIANTS) {
  const label = `${variant.dtype}, ${variant.shards} file(s)${variant.tied ? ", tied" : ""}`;

  Deno.test(`hf (${label}): same logits as the llama2.c checkpoint of the same weights`, () =>
    withModel(variant, async ({ dir, bin, config }) => {
      const { hf, meta } = await run(Effect.scoped(Effect.gen(function* () {
        const hf = yield* openHuggingFace(dir);
        const meta = yield* openLlama2c(bin);
        return {
          hf: { config: hf.config, weights: yield* readAllWeights(hf.source, hf.config) },
          meta: { config: meta.config, weights: yield* readAllWeights(meta.source, meta.config) },
        };
      })));
      assert.deepEqual(hf.config, { ...config, family: "llama", ropeLayout: "half" });
      assert.deepEqual(meta.config, config);
      if (variant.tied) assert.deepEqual(hf.weights.output, hf.weights.tokEmbeddings);
      // The files really hold the dtype, and the weights are exactly representable in it.
      const shard = join(dir, variant.shards === 1 ? "model.safetensors" : shardName(0, 2));
      const header = await run(
        Effect.scoped(Effect.flatMap(openForRead(shard), (h) => readSafetensorsHeader(h, shard))),
      );
      assert.ok([...header.tensors.values()].every((e) => e.dtype === variant.dtype));
      const w2 = hf.weights.layers[1].w2;
      assert.deepEqual(decodeElements(variant.dtype, encodeElements(variant.dtype, w2)), w2);
      const half = await run(ReferenceLlama.make(hf.config, hf.weights));
      const interleaved = await run(ReferenceLlama.make(meta.config, meta.weights));
      const fromFile = await run(ReferenceLlama.load(bin));
      const want = promptLogits(interleaved);
      promptLogits(half).forEach((l, pos) =>
        assertClose(l, want[pos], { atol: 1e-5, rtol: 0, what: `logits@${pos}` })
      );
      promptLogits(fromFile).forEach((l, pos) =>
        assert.deepEqual(l, want[pos], `ReferenceLlama.load agrees @${pos}`)
      );
      // The permutation is real: HF weights with interleaved RoPE diverge once positions rotate.
      const wrong = await run(
        ReferenceLlama.make({ ...hf.config, ropeLayout: "interleaved" }, hf.weights),
      );
      const wrongLogits = promptLogits(wrong);
      assert.ok(maxAbsDiff(wrongLogits[3], want[3]) > 1e-3);
    }));

  Deno.test(`hf (${label}): tp=2 rank shards equal the llama2.c ones (q/k up to HF's permutation)`, () =>
    withModel(variant, async ({ dir, bin, config }) => {
      const plans = await run(planLlama(config, 2));
      const { hf, meta } = await run(Effect.scoped(Effect.gen(function* () {
        const hf = yield* openHuggingFace(dir);
        const meta = yield* openLlama2c(bin);
        return {
          hf: yield* Effect.forEach(plans, (p) => readRankShards(hf.source, hf.config, p)),
          meta: yield* Effect.forEach(plans, (p) => readRankShards(meta.source, meta.config, p)),
        };
      })));
      const { dim, headDim: hd } = config;
      for (const [rank, plan] of plans.entries()) {
        const [h, m] = [hf[rank], meta[rank]];
        assert.deepEqual(h.embedding, m.embedding, `rank ${rank} embedding`);
        assert.deepEqual(h.norm, m.norm);
        assert.deepEqual(h.output, m.output, `rank ${rank} output`);
        for (let l = 0; l < config.nLayers; l++) {
          const [hl, ml] = [h.layers[l], m.layers[l]];
          for (const k of ["inputNorm", "ffnNorm", "o", "gateUp", "down"] as const) {
            assert.deepEqual(hl[k], ml[k], `rank ${rank} layer ${l} ${k}`);
          }
          // The merged shard is [dim, q | k | v]: v as stored; q and k back to rows
          // [heads·hd, dim], Meta's permuted per head.
          const q = plan.heads.count * hd, kv = plan.kvHeads.count * hd;
          const part = (w: Float32Array, start: number, count: number) =>
            columnsOf(w, dim, start, count);
          assert.deepEqual(
            part(hl.qkv.weight, q + kv, kv),
            part(ml.qkv.weight, q + kv, kv),
            `rank ${rank} layer ${l} v`,
          );
          for (
            const [k, start, heads] of [["q", 0, plan.heads.count], [
              "k",
              q,
              plan.kvHeads.count,
            ]] as const
          ) {
            const rows = heads * hd;
            const hfRows = transpose(part(hl.qkv.weight, start, rows), dim, rows);
            const metaRows = transpose(part(ml.qkv.weight, start, rows), dim, rows);
            assert.deepEqual(hfRows, hfPermute(metaRows, heads, rows, dim), `rank ${rank} ${k}`);
            assert.notDeepEqual(hfRows, metaRows, "q/k rows are permuted in HF files");
          }
        }
      }
    }));
}

Deno.test("hf: ranged reads of columns and rows agree with whole tensors (F16, sharded)", () =>
  withModel({ dtype: "F16", shards: 2, tied: false }, async ({ dir }) => {
    await run(Effect.scoped(Effect.gen(function* () {
      const { source } = yield* openHuggingFace(dir);
      const whole = yield* source.rows("layers.1.w2", 0, 32); // [dim 32, hidden 72]
      const cols = yield* source.columns("layers.1.w2", 36, 36);
      for (let r = 0; r < 32; r++) {
        assert.deepEqual(cols.slice(r * 36, r * 36 + 36), whole.slice(r * 72 + 36, r * 72 + 72));
      }
      assert.deepEqual(yield* source.rows("layers.1.w2", 5, 3), whole.slice(5 * 72, 8 * 72));
      const outOfRange = yield* Effect.flip(source.rows("layers.1.w2", 30, 3));
      assert.match(outOfRange.message, /model\.layers\.1\.mlp\.down_proj\.weight.*out of range/);
      const unknown = yield* Effect.flip(source.rows("layers.7.wq", 0, 1));
      assert.equal(unknown.tensor, "layers.7.wq");
    })));
  }));

// ---------------------------------------------------------------------------------------------
// Broken directories and files

/** Opens `dir` expecting a LoadError; checks it is one line naming `file` (and `tensor`). */
const expectLoadError = async (
  dir: string,
  expected: { file: string; tensor?: string; reason: RegExp },
) => {
  const error = await failureOf(Effect.scoped(openHuggingFace(dir)));
  assert.ok(error instanceof LoadError, String(error));
  assert.equal(error.file, expected.file);
  assert.ok(error.message.includes(expected.file), error.message);
  assert.equal(error.tensor, expected.tensor, error.message);
  if (expected.tensor) assert.ok(error.message.includes(expected.tensor), error.message);
  assert.ok(!error.message.includes("\n"));
  assert.match(error.reason, expected.reason);
  return error;
};

const SHARD2 = shardName(1, 2);

Deno.test("hf errors: truncated, over-long header, bad JSON, unsupported dtype", () =>
  withModel({ dtype: "F32", shards: 2, tied: false }, async ({ dir }) => {
    const shard = join(dir, SHARD2);
    const good = await Deno.readFile(shard);
    const headerLength = Number(new DataView(good.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(good.subarray(8, 8 + headerLength)));
    // The tensor whose data is last in the file (written last, shard 2 is in reverse order).
    const last = Object.entries(header)
      .filter(([k]) => k !== "__metadata__")
      .sort(([, a], [, b]) =>
        (b as { data_offsets: number[] }).data_offsets[1] -
        (a as { data_offsets: number[] }).data_offsets[1]
      )[0][0];

    await Deno.writeFile(shard, good.subarray(0, good.length - 100));
    await expectLoadError(dir, { file: shard, tensor: last, reason: /past the end of the data/ });

    await Deno.writeFile(shard, good.subarray(0, 5));
    await expectLoadError(dir, { file: shard, reason: /too short/ });

    const long = good.slice();
    new DataView(long.buffer).setBigUint64(0, BigInt(good.length), true);
    await Deno.writeFile(shard, long);
    await expectLoadError(dir, { file: shard, reason: /header length \d+ runs past the end/ });

    const huge = good.slice();
    new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
    await Deno.writeFile(shard, huge);
    await expectLoadError(dir, { file: shard, reason: /header length 9223372036854775808/ });

    const garbled = good.slice();
    garbled.set(new TextEncoder().encode("{not json"), 8);
    await Deno.writeFile(shard, garbled);
    await expectLoadError(dir, { file: shard, reason: /not valid JSON/ });

    // A dtype the format does not define fails in the header...
    const renamed = structuredClone(header);
    renamed[last].dtype = "Q4_K";
    const body = good.subarray(8 + headerLength);
    const withHeader = (h: unknown) => {
      const json = new TextEncoder().encode(JSON.stringify(h));
      const bytes = new Uint8Array(8 + json.length + body.length);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
      bytes.set(json, 8);
      bytes.set(body, 8 + json.length);
      return bytes;
    };
    await Deno.writeFile(shard, withHeader(renamed));
    await expectLoadError(dir, { file: shard, tensor: last, reason: /unknown dtype "Q4_K"/ });

    // ...one it defines but we cannot widen to f32 fails when the model needs that tensor.
    // (F8_E4M3 has 1-byte elements: the tensor keeps its offsets only with a 4x wider shape.)
    const f8 = structuredClone(header);
    f8[last].dtype = "F8_E4M3";
    f8[last].shape = [f8[last].shape[0], f8[last].shape[1] * 4];
    await Deno.writeFile(shard, withHeader(f8));
    await expectLoadError(dir, {
      file: shard,
      tensor: last,
      reason: /dtype F8_E4M3 is not supported/,
    });

    // A wrong shape, consistent within the file, against config.json.
    const reshaped = structuredClone(header);
    reshaped[last].shape = [reshaped[last].shape[0] / 2, reshaped[last].shape[1] * 2];
    await Deno.writeFile(shard, withHeader(reshaped));
    await expectLoadError(dir, {
      file: shard,
      tensor: last,
      reason: /shape \[\d+, \d+\] does not match config\.json/,
    });
    await Deno.writeFile(shard, good);
  }));

Deno.test("hf errors: index, config and missing tensors", () =>
  withModel({ dtype: "F32", shards: 2, tied: false }, async ({ dir }) => {
    const indexFile = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(await Deno.readTextFile(indexFile));
    const q = "model.layers.1.self_attn.q_proj.weight";

    const missing = structuredClone(index);
    delete missing.weight_map[q];
    await writeJson(indexFile, missing);
    await expectLoadError(dir, {
      file: indexFile,
      tensor: q,
      reason: /missing from the weight_map/,
    });

    const moved = structuredClone(index);
    const other = moved.weight_map[q] === SHARD2 ? shardName(0, 2) : SHARD2;
    moved.weight_map[q] = other;
    await writeJson(indexFile, moved);
    await expectLoadError(dir, {
      file: join(dir, other),
      tensor: q,
      reason: /missing from the file, though .*index\.json maps it there/,
    });

    const escape = structuredClone(index);
    escape.weight_map[q] = "../elsewhere.safetensors";
    await writeJson(indexFile, escape);
    await expectLoadError(dir, { file: indexFile, tensor: q, reason: /not a file name/ });

    await Deno.writeTextFile(indexFile, "{");
    await expectLoadError(dir, { file: indexFile, reason: /not valid JSON/ });
    await writeJson(indexFile, index);

    // config.json that disagrees with the weights: the first tensor whose shape it changes.
    const configFile = join(dir, "config.json");
    const config = JSON.parse(await Deno.readTextFile(configFile));
    await writeJson(configFile, { ...config, intermediate_size: 64 });
    await expectLoadError(dir, {
      file: join(dir, shardName(0, 2)),
      tensor: "model.layers.0.mlp.gate_proj.weight",
      reason: /shape \[72, 32\] does not match config\.json, which implies \[64, 32\]/,
    });
    for (
      const [patch, reason] of [
        [{ hidden_size: undefined }, /hidden_size is missing/],
        [{ num_key_value_heads: 3 }, /not a multiple of num_key_value_heads 3/],
        [
          { rope_scaling: { rope_type: "llama3", factor: 8 } },
          /rope_scaling\.low_freq_factor is missing/,
        ],
        [{ rope_scaling: { rope_type: "longrope" } }, /rope_scaling type "longrope" is not/],
        [{ model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }, /not a supported model/],
        [{ model_type: "qwen2", use_sliding_window: true }, /use_sliding_window = true/],
        [{ vocab_size: 1e9 }, /vocab_size = 1000000000 is implausibly large/],
      ] as const
    ) {
      await writeJson(configFile, { ...config, ...patch });
      await expectLoadError(dir, { file: configFile, reason });
    }
    await Deno.remove(configFile);
    await expectLoadError(dir, { file: configFile, reason: /file not found/ });
    await writeJson(configFile, config);

    await Deno.remove(indexFile);
    await expectLoadError(dir, { file: dir, reason: /no model\.safetensors or .*index\.json/ });
  }));

Deno.test("hf: config.json defaults follow transformers' LlamaConfig", async () => {
  const config = await run(configFromHuggingFace("config.json", {
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 2,
    num_attention_heads: 8,
    vocab_size: 512,
    max_position_embeddings: 256,
  }));
  assert.deepEqual(
    [config.nKvHeads, config.headDim, config.ropeTheta, config.normEps, config.sharedClassifier],
    [8, 8, 10000, 1e-6, false],
  );
  assert.equal(config.ropeLayout, "half");
  const explicit = await run(configFromHuggingFace("config.json", {
    architectures: ["LlamaForCausalLM"],
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 32,
    vocab_size: 512,
    max_position_embeddings: 256,
    rope_theta: 500000,
    tie_word_embeddings: true,
  }));
  assert.deepEqual([explicit.headDim, explicit.ropeTheta, explicit.sharedClassifier], [
    32,
    500000,
    true,
  ]);
});

Deno.test("safetensors header: every malformed header is a LoadError naming the tensor", async () => {
  const entry = { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] };
  const cases: { header: unknown; data: number; tensor?: string; reason: RegExp }[] = [
    { header: "[1, 2]", data: 0, reason: /not a JSON object/ },
    {
      header: { __metadata__: { a: 1 } },
      data: 0,
      reason: /__metadata__ must be an object of strings/,
    },
    { header: { w: 3 }, data: 0, tensor: "w", reason: /entry is not an object/ },
    {
      header: { w: { ...entry, dtype: undefined } },
      data: 24,
      tensor: "w",
      reason: /unknown dtype/,
    },
    { header: { w: { ...entry, shape: [2, -3] } }, data: 24, tensor: "w", reason: /shape/ },
    { header: { w: { ...entry, shape: [2, 1.5] } }, data: 24, tensor: "w", reason: /shape/ },
    {
      header: { w: { ...entry, data_offsets: [0] } },
      data: 24,
      tensor: "w",
      reason: /data_offsets/,
    },
    {
      header: { w: { ...entry, data_offsets: [24, 0] } },
      data: 24,
      tensor: "w",
      reason: /data_offsets/,
    },
    {
      header: { w: { ...entry, data_offsets: [0, 20] } },
      data: 20,
      tensor: "w",
      reason: /span 20 bytes but F32 \[2, 3\] needs 24/,
    },
    { header: { w: entry }, data: 23, tensor: "w", reason: /past the end of the data/ },
    { header: { w: entry }, data: 30, tensor: "w", reason: /6 trailing bytes/ },
    {
      header: { w: entry, v: { dtype: "BF16", shape: [4], data_offsets: [20, 28] } },
      data: 28,
      tensor: "v",
      reason: /overlap/,
    },
    {
      header: { w: entry, v: { dtype: "F16", shape: [2], data_offsets: [28, 32] } },
      data: 32,
      tensor: "v",
      reason: /4 unaccounted bytes/,
    },
  ];
  for (const c of cases) {
    const json = new TextEncoder().encode(
      typeof c.header === "string" ? c.header : JSON.stringify(c.header),
    );
    const error = await failureOf(
      parseSafetensorsHeader("x.safetensors", 8 + json.length + c.data, json),
    );
    assert.equal(error.tensor, c.tensor, `${JSON.stringify(c.header)}: ${error.message}`);
    assert.match(error.reason, c.reason, JSON.stringify(c.header));
    assert.ok(error.message.startsWith("cannot load x.safetensors"));
  }
  const noTensors = await failureOf(
    parseSafetensorsHeader("x.safetensors", 8 + 2 + 24, new TextEncoder().encode("{}")),
  );
  assert.match(noTensors.reason, /24 trailing bytes/);
  const empty = await run(
    parseSafetensorsHeader("x.safetensors", 8 + 2, new TextEncoder().encode("{}")),
  );
  assert.equal(empty.tensors.size, 0);
});

Deno.test("safetensors: written files read back with their dtypes, metadata and offsets", async () => {
  const data = randomFloats(6, 3);
  const bytes = encodeSafetensors([
    { name: "a", dtype: "BF16", shape: [3], data: data.subarray(0, 3) },
    { name: "b", dtype: "F16", shape: [1, 3], data: data.subarray(3) },
  ], { format: "pt" });
  assert.equal((bytes.length - 8 - 12) % 8, 0, "header padded to 8 bytes");
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    await Deno.writeFile(path, bytes);
    const header = await run(
      Effect.scoped(Effect.flatMap(openForRead(path), (h) => readSafetensorsHeader(h, path))),
    );
    assert.deepEqual(header.metadata, { format: "pt" });
    assert.deepEqual([...header.tensors.keys()], ["a", "b"]);
    assert.equal(header.tensors.get("b")!.offset, header.dataStart + 6);
    assert.deepEqual(header.tensors.get("a")!.dtype, "BF16");
    const a = await run(
      Effect.scoped(
        Effect.flatMap(
          openForRead(path),
          (h) => readSafetensorsRows(h, path, header.tensors.get("a")!, 0, 1),
        ),
      ),
    );
    assert.deepEqual(a, decodeElements("BF16", encodeElements("BF16", data.subarray(0, 3))));
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("safetensors: f16/bf16 conversions are exact and round to nearest even", () => {
  // Every f16 bit pattern widens exactly as the platform's Float16Array does.
  const all = new Uint16Array(65536).map((_, i) => i);
  const platform = new Float16Array(all.buffer);
  for (let h = 0; h < 65536; h++) {
    const mine = f16ToF32(h);
    assert.ok(
      Object.is(mine, platform[h]) || (Number.isNaN(mine) && Number.isNaN(platform[h])),
      `f16 0x${h.toString(16)}`,
    );
  }
  assert.deepEqual([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00].map(f16ToF32), [
    1,
    -2,
    65504,
    2 ** -24,
    Infinity,
  ]);
  // Narrowing f32 values matches Float16Array's rounding, subnormals and overflow included.
  const samples = [
    ...randomFloats(20000, 11, 4),
    ...randomFloats(2000, 12, 1e-4),
    ...randomFloats(2000, 13, 1e-7),
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    65519,
    65520,
    1e6,
    -0,
    2 ** -25,
    3 * 2 ** -26,
    -Infinity,
  ];
  const narrowed = new Float16Array(samples);
  const bits = new Uint16Array(narrowed.buffer);
  samples.forEach((x, i) => assert.equal(f32ToF16(x), bits[i], `f16 of ${x}`));
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, "tie rounds to even");
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, "tie rounds to even (up)");
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  // bf16 is the top half of an f32.
  assert.deepEqual([0x3f80, 0x4049, 0xc000, 0x7f80, 0x0001].map(bf16ToF32), [
    1,
    3.140625,
    -2,
    Infinity,
    2 ** -133,
  ]);
  assert.equal(f32ToBf16(Math.PI), 0x4049);
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, "tie rounds to even");
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82, "tie rounds to even (up)");
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  for (const x of randomFloats(1000, 14, 100)) {
    const b = bf16ToF32(f32ToBf16(x));
    assert.ok(Math.abs(b - x) <= Math.abs(x) * 2 ** -8, `bf16 of ${x}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Tokenizer

Deno.test("hf tokenizer: encode/decode round trip, BOS/EOS, byte fallback, streaming", () =>
  withModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir }) => {
    const tok = await run(loadHuggingFaceTokenizer(dir));
    assert.equal(tok.vocabSize, 64);
    assert.equal(VOCAB.length, 64);
    assert.deepEqual([tok.bosId, tok.eosId, tok.eosIds], [1, 2, [2]]);
    const names = (ids: number[]) => ids.map((i) => VOCAB[i]);
    assert.deepEqual(names(tok.encode("the cat", { bos: true, eos: false })), [
      "<s>",
      "▁the",
      "▁c",
      "at",
    ]);
    assert.deepEqual(names(tok.encode("the cat", { bos: false, eos: true })), [
      "▁the",
      "▁c",
      "at",
      "</s>",
    ]);
    assert.deepEqual(tok.encode("", { bos: true, eos: false }), [1]);
    assert.deepEqual(names(tok.encode("日", { bos: false, eos: false })), [
      "▁",
      "<0xE6>",
      "<0x97>",
      "<0xA5>",
    ]);
    for (
      const s of [
        "the cat sat on the mat",
        "hello, world!",
        "in the beginning was the word.",
        "a café 日 and tea",
        "  two  spaces",
        "",
      ]
    ) {
      const ids = tok.encode(s, { bos: true, eos: true });
      assert.ok(ids.every((i) => i !== 0), `${JSON.stringify(s)} has no <unk>`);
      assert.equal(tok.decode(ids), s, JSON.stringify(s));
      // Streamed from BOS, the pieces concatenate to the same text.
      const stream = tok.streamDecoder(ids[0]);
      const pieces = ids.slice(1).map((t) => stream.push(t));
      assert.equal(pieces.join("") + stream.flush(), s, `streamed ${JSON.stringify(s)}`);
    }
    // A character split over byte tokens comes out whole with its last byte.
    const ids = tok.encode("the 日", { bos: true, eos: false });
    const stream = tok.streamDecoder(1);
    assert.deepEqual(ids.slice(1).map((t) => stream.push(t)), ["the", " ", "", "", "日"]);
    assert.equal(stream.flush(), "");
    const cut = tok.streamDecoder(1);
    cut.push(VOCAB.indexOf("<0xE6>"));
    assert.equal(cut.flush(), "\uFFFD", "an unfinished character flushes as U+FFFD");
    assert.throws(() => tok.decode([64]), RangeError);
    assert.throws(() => tok.streamDecoder().push(-1), RangeError);
  }));

Deno.test("hf tokenizer: EOS lists from config.json, and broken files", () =>
  withModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir }) => {
    const configFile = join(dir, "config.json");
    const config = JSON.parse(await Deno.readTextFile(configFile));
    await writeJson(configFile, { ...config, eos_token_id: [2, 40] });
    const tok = await run(loadHuggingFaceTokenizer(dir));
    assert.deepEqual([tok.eosId, tok.eosIds], [2, [2, 40]]);

    const tokConfigFile = join(dir, "tokenizer_config.json");
    await writeJson(tokConfigFile, { ...TOKENIZER_CONFIG, eos_token: "<eot>" });
    const unknown = await failureOf(loadHuggingFaceTokenizer(dir));
    assert.ok(unknown instanceof LoadError);
    assert.match(
      unknown.message,
      /tokenizer_config\.json.*eos_token "<eot>" is not in the vocabulary/,
    );
    // Without tokenizer_config.json, config.json's ids are used.
    await Deno.remove(tokConfigFile);
    const fallback = await run(loadHuggingFaceTokenizer(dir));
    assert.deepEqual([fallback.bosId, fallback.eosIds], [1, [2, 40]]);

    const tokenizerFile = join(dir, "tokenizer.json");
    await writeJson(tokenizerFile, { ...tokenizerJson(), model: undefined });
    const broken = await failureOf(loadHuggingFaceTokenizer(dir));
    assert.ok(broken.message.includes(tokenizerFile));
    assert.match(broken.reason, /tokenizers library rejects it/);
    await Deno.remove(tokenizerFile);
    assert.match((await failureOf(loadHuggingFaceTokenizer(dir))).reason, /file not found/);
  }));

Deno.test("hf tokenizer: BOS only where the tokenizer adds it (add_bos_token, else the post-processor)", () =>
  withModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir }) => {
    const tokConfigFile = join(dir, "tokenizer_config.json");
    const tokenizerFile = join(dir, "tokenizer.json");
    const addsBos = async () => (await run(loadHuggingFaceTokenizer(dir))).addsBos;
    // The fixture says add_bos_token: true (Llama 2).
    assert.equal(await addsBos(), true);
    await writeJson(tokConfigFile, { ...TOKENIZER_CONFIG, add_bos_token: false });
    assert.equal(await addsBos(), false);
    // No add_bos_token: the post-processor decides. A template opening with <s> (Llama 2, and
    // Llama 3 inside a Sequence) adds it; none (Qwen's ByteLevel) does not.
    const { add_bos_token: _, ...withoutFlag } = TOKENIZER_CONFIG;
    await writeJson(tokConfigFile, withoutFlag);
    assert.equal(await addsBos(), true);
    const template = tokenizerJson().post_processor;
    await writeJson(tokenizerFile, {
      ...tokenizerJson(),
      post_processor: { type: "Sequence", processors: [{ type: "ByteLevel" }, template] },
    });
    assert.equal(await addsBos(), true);
    await writeJson(tokenizerFile, { ...tokenizerJson(), post_processor: { type: "ByteLevel" } });
    assert.equal(await addsBos(), false);
    await writeJson(tokenizerFile, { ...tokenizerJson(), post_processor: null });
    const tokenizer = await run(loadHuggingFaceTokenizer(dir));
    assert.equal(tokenizer.addsBos, false);
    // What callers encode with: no BOS in front of the prompt.
    const ids = tokenizer.encode("ab", { bos: tokenizer.addsBos, eos: false });
    assert.notEqual(ids[0], tokenizer.bosId);
  }));
