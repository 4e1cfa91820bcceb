/**
 * GGUF: every block type against a per-element reference written from the format (gguf.md and
 * ggml-quants.c's block layouts), bit for bit; stories260K written as GGUF generating the .bin's
 * greedy tokens at tp 1, 2 and 4; a Q8_0 and a Q4_0 file within a stated tolerance of the same
 * file dequantized on the CPU; a split that cuts a block refused with its numbers; malformed
 * files refused naming the problem.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Chunk, Effect, Stream } from "effect";
import { generate } from "../engine/generate.ts";
import { loadTokenizer } from "../models/files.ts";
import { GGML_TYPES } from "../models/gguf/quants.ts";
import { loadGgufTokenizer, openGguf } from "../models/gguf/open.ts";
import { LlamaModel } from "../models/llama.ts";
import { RankLlama } from "../models/llama_rank.ts";
import { planLlama } from "../models/plan.ts";
import type { WeightSource } from "../models/shards.ts";
import { acquireGpu } from "../gpu/device.ts";
import { WEIGHT_BLOCK } from "../kernels/matmul.ts";
import { type LlamaWeights, ReferenceLlama } from "../models/reference.ts";
import { f16ToF32, f32ToF16 } from "../models/safetensors.ts";
import { InProcessTransport, WorkersTransport } from "../ranks/transports.ts";
import { encodeGguf, GGML, stories260KGguf } from "./fixtures/gguf.ts";
import { assertClose, randomFloats } from "./tolerance.ts";
import { assertChangesGreedy } from "./fixtures/hf_family.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";

const f32 = Math.fround;

// ---------------------------------------------------------------------------------------------
// Each element from the block layout, one at a time.

const h16 = (b: Uint8Array, at: number) => f16ToF32(b[at] | (b[at + 1] << 8));
const i8 = (v: number) => (v << 24) >> 24;
/** Low nibble for the first half of a 32-block, high for the second (ggml's order). */
const nibble = (qs: Uint8Array, at: number, i: number) =>
  i < 16 ? qs[at + i] & 15 : qs[at + i - 16] >> 4;
/** The 6-bit scale and min of sub-block s, packed in 12 bytes at `at` (K quants). */
const kScale = (b: Uint8Array, at: number, s: number) =>
  s < 4 ? { sc: b[at + s] & 63, m: b[at + s + 4] & 63 } : {
    sc: (b[at + s + 4] & 15) | ((b[at + s - 4] >> 6) << 4),
    m: (b[at + s + 4] >> 4) | ((b[at + s] >> 6) << 4),
  };

/** Element i of the block at byte 0 of `b`, as the format defines it (C float arithmetic). */
const SPEC: Record<string, (b: Uint8Array, i: number) => number> = {
  Q4_0: (b, i) => f32((nibble(b, 2, i) - 8) * h16(b, 0)),
  Q4_1: (b, i) => f32(f32(nibble(b, 4, i) * h16(b, 0)) + h16(b, 2)),
  Q5_0: (b, i) => {
    const high = (new DataView(b.buffer, b.byteOffset).getUint32(2, true) >>> i) & 1;
    return f32(((nibble(b, 6, i) | (high << 4)) - 16) * h16(b, 0));
  },
  Q5_1: (b, i) => {
    const high = (new DataView(b.buffer, b.byteOffset).getUint32(4, true) >>> i) & 1;
    return f32(f32((nibble(b, 8, i) | (high << 4)) * h16(b, 0)) + h16(b, 2));
  },
  Q8_0: (b, i) => f32(i8(b[2 + i]) * h16(b, 0)),
  Q4_K: (b, i) => {
    const chunk = Math.floor(i / 64), l = i % 32, high = i % 64 >= 32;
    const q = b[16 + chunk * 32 + l];
    const { sc, m } = kScale(b, 4, Math.floor(i / 32));
    return f32(f32(f32(h16(b, 0) * sc) * (high ? q >> 4 : q & 15)) - f32(h16(b, 2) * m));
  },
  Q5_K: (b, i) => {
    const chunk = Math.floor(i / 64), l = i % 32, high = i % 64 >= 32;
    const q = b[48 + chunk * 32 + l];
    const fifth = (b[16 + l] >> (2 * chunk + (high ? 1 : 0))) & 1;
    const { sc, m } = kScale(b, 4, Math.floor(i / 32));
    const value = (high ? q >> 4 : q & 15) + 16 * fifth;
    return f32(f32(f32(h16(b, 0) * sc) * value) - f32(h16(b, 2) * m));
  },
  Q6_K: (b, i) => {
    const half = Math.floor(i / 128), r = i % 128, quarter = Math.floor(r / 32), l = r % 32;
    const low = b[half * 64 + l + (quarter % 2) * 32];
    const low4 = quarter < 2 ? low & 15 : low >> 4;
    const high2 = (b[128 + half * 32 + l] >> (2 * quarter)) & 3;
    const scale = i8(b[192 + half * 8 + Math.floor(l / 16) + 2 * quarter]);
    return f32(f32(h16(b, 208) * scale) * ((low4 | (high2 << 4)) - 32));
  },
};

/** Random blocks whose f16 fields are small finite scales. */
const randomBlocks = (type: string, blocks: number, seed: number) => {
  const t = [...GGML_TYPES.values()].find((x) => x.name === type)!;
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const bytes = Uint8Array.from({ length: blocks * t.blockBytes }, () => Math.floor(next() * 256));
  const halves: Record<string, number[]> = {
    Q4_0: [0],
    Q4_1: [0, 2],
    Q5_0: [0],
    Q5_1: [0, 2],
    Q8_0: [0],
    Q4_K: [0, 2],
    Q5_K: [0, 2],
    Q6_K: [208],
  };
  for (let b = 0; b < blocks; b++) {
    for (const at of halves[type]) {
      const h = f32ToF16((next() - 0.5) * 0.1);
      bytes[b * t.blockBytes + at] = h & 0xff;
      bytes[b * t.blockBytes + at + 1] = h >> 8;
    }
  }
  return { t, bytes };
};

Deno.test("gguf: every block type dequantizes, bit for bit, as its layout defines each element", () => {
  for (const type of Object.keys(SPEC)) {
    const blocks = 5;
    const { t, bytes } = randomBlocks(type, blocks, type.length * 7919);
    const out = new Float32Array(blocks * t.blockElements);
    t.dequantize(bytes, out);
    const want = Float32Array.from({ length: out.length }, (_, e) => {
      const b = Math.floor(e / t.blockElements);
      return SPEC[type](
        bytes.subarray(b * t.blockBytes, (b + 1) * t.blockBytes),
        e % t.blockElements,
      );
    });
    assert.deepEqual(out, want, type);
    assert.ok(new Set(out).size > t.blockElements, `${type}: the blocks are not trivial`);
  }
  // The plain types: F16 and BF16 bit patterns, F32 as stored.
  const halves = Uint16Array.of(0x3c00, 0xc000, 0x0001, 0x7bff);
  const f16 = new Float32Array(4);
  GGML_TYPES.get(GGML.F16)!.dequantize(new Uint8Array(halves.buffer), f16);
  assert.deepEqual(Array.from(f16), [1, -2, 2 ** -24, 65504]);
  const bf16 = new Float32Array(2);
  GGML_TYPES.get(GGML.BF16)!.dequantize(
    new Uint8Array(Uint16Array.of(0x3f80, 0xc0a0).buffer),
    bf16,
  );
  assert.deepEqual(Array.from(bf16), [1, -5]);
});

// ---------------------------------------------------------------------------------------------
// Models

const withFile = async <T>(bytes: Uint8Array, f: (path: string) => Promise<T>) => {
  const dir = await Deno.makeTempDir({ prefix: "tessera-gguf-" });
  try {
    const path = join(dir, "model.gguf");
    await Deno.writeFile(path, bytes);
    return await f(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

const greedyTokens = (path: string, tp: number, maxTokens: number) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(path);
      const model = yield* LlamaModel.load({
        source: { format: "gguf", path },
        tp,
        kvCacheDtype: "f32",
      });
      const out = yield* Stream.runCollect(
        generate(model, tokenizer, { prompt: "", maxTokens, stopAtEos: false }),
      );
      return Chunk.toArray(out).map((t) => t.token);
    }).pipe(Effect.scoped, Effect.provide(tp === 1 ? InProcessTransport() : WorkersTransport())),
  );

Deno.test("gguf: stories260K written as F32 GGUF generates the .bin's greedy tokens at tp 1, 2, 4", async () => {
  const fixture: GreedyFixture = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/stories260K_greedy.json", import.meta.url)),
  );
  const { file } = await stories260KGguf("F32");
  await withFile(file, async (path) => {
    const opened = await Effect.runPromise(Effect.scoped(openGguf(path)));
    assert.equal(opened.defaultWeights, "f32");
    const fromGguf = await Effect.runPromise(loadTokenizer(path));
    const fromBin = await Effect.runPromise(loadTokenizer(STORIES260K_PATH, TOK512_PATH));
    const text = "Once upon a time, Lily saw a big red ball.";
    const options = { bos: true, eos: false };
    assert.deepEqual(fromGguf.encode(text, options), fromBin.encode(text, options));
    for (const tp of [1, 2, 4]) {
      assert.deepEqual(await greedyTokens(path, tp, 48), fixture.tokens.slice(0, 48), `tp ${tp}`);
    }
  });
});

Deno.test("gguf: rope_freqs (Llama 3.1+ files) divides RoPE's frequencies, at tp 1 and 2 as on the CPU", async () => {
  const factors = Float32Array.of(1, 1.5, 8, 40);
  const { file, reference } = await stories260KGguf("F32", {
    extra: [{
      name: "rope_freqs.weight",
      dims: [4],
      type: GGML.F32,
      data: new Uint8Array(factors.buffer),
    }],
  });
  await withFile(file, async (path) => {
    const scaled = await Effect.runPromise(ReferenceLlama.make(
      { ...reference.config, ropeScaling: { type: "factors", factors: Array.from(factors) } },
      reference.weights,
    ));
    const want = PROMPT.map((token, pos) => scaled.forward(token, pos));
    const plain = PROMPT.map((token, pos) => reference.forward(token, pos));
    assertChangesGreedy(want, plain, "rope_freqs");
    for (const tp of [1, 2]) {
      const got = await promptLogits(path, tp);
      got.forEach((l, pos) =>
        assertClose(l, want[pos], { atol: 1e-4, rtol: 0, what: `rope_freqs tp ${tp} @${pos}` })
      );
    }
  });
});

Deno.test("gguf: a phi3 file (fused attn_qkv and gate | up ffn_up, half-split RoPE, sliding window) at tp 1 and 2 equals the CPU reference", async () => {
  const WINDOW = 4;
  const { file, reference } = await stories260KGguf("Q8_0", {
    arch: "phi3",
    metadata: { "phi3.attention.sliding_window": { u32: WINDOW } },
  });
  await withFile(file, async (path) => {
    const opened = await Effect.runPromise(Effect.scoped(openGguf(path)));
    assert.equal(opened.config.ropeLayout, "half");
    assert.equal(opened.config.slidingWindow, WINDOW);
    const { config, weights } = await dequantizedWeights(path);
    const phi = await Effect.runPromise(ReferenceLlama.make(config, weights));
    const want = PROMPT.map((token, pos) => phi.forward(token, pos));
    const unwindowed = await Effect.runPromise(
      ReferenceLlama.make({ ...config, slidingWindow: undefined }, weights),
    );
    assertChangesGreedy(want, PROMPT.map((t, pos) => unwindowed.forward(t, pos)), "the window");
    assert.notEqual(reference.config.ropeLayout, config.ropeLayout);
    for (const tp of [1, 2]) {
      const got = await promptLogits(path, tp);
      got.forEach((l, pos) =>
        assertClose(l, want[pos], { atol: 1e-4, rtol: 0, what: `phi3 tp ${tp} @${pos}` })
      );
    }
  });
});

Deno.test("gguf: a gemma2 file (norms stored as 1 + w, post norms, caps, even-layer window) at tp 1 and 2 equals the CPU reference", async () => {
  const dim = 64, layers = 5;
  const extra = Array.from(
    { length: layers },
    (_, l) =>
      ["post_attention_norm", "post_ffw_norm"].map((name, i) => ({
        name: `blk.${l}.${name}.weight`,
        dims: [dim],
        type: GGML.F32,
        data: new Uint8Array(randomFloats(dim, 50 + 2 * l + i, 0.3).map((v) => 1 + v).buffer),
      })),
  ).flat();
  const { file } = await stories260KGguf("Q8_0", {
    arch: "gemma2",
    extra,
    metadata: {
      "gemma2.attention.sliding_window": { u32: 4 },
      "gemma2.attn_logit_softcapping": { f32: 2 },
      "gemma2.final_logit_softcapping": { f32: 5 },
    },
  });
  await withFile(file, async (path) => {
    const { config, weights } = await dequantizedWeights(path);
    assert.deepEqual(
      [config.sandwichNorms, config.normWeightOffset, config.slidingWindowLayers],
      [true, undefined, "even"],
    );
    assert.equal(config.attentionScale, 1 / Math.sqrt(config.headDim));
    assert.equal(config.embeddingScale, Math.sqrt(dim));
    assert.deepEqual(
      [config.attentionSoftcap, config.finalLogitSoftcap, config.slidingWindow, config.ropeLayout],
      [2, 5, 4, "half"],
    );
    const gemma = await Effect.runPromise(ReferenceLlama.make(config, weights));
    const want = PROMPT.map((token, pos) => gemma.forward(token, pos));
    for (const tp of [1, 2]) {
      const got = await promptLogits(path, tp);
      got.forEach((l, pos) =>
        assertClose(l, want[pos], { atol: 1e-4, rtol: 0, what: `gemma2 tp ${tp} @${pos}` })
      );
    }
  });
});

/** Every weight of an opened GGUF, dequantized on the CPU, for the reference forward pass. */
const dequantizedWeights = (path: string) =>
  Effect.runPromise(Effect.scoped(Effect.gen(function* () {
    const { config, source } = yield* openGguf(path);
    const q = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
    const get = (name: string, rows: number) => source.rows(name, 0, rows);
    const layers = [];
    for (let l = 0; l < config.nLayers; l++) {
      const p = `layers.${l}.`;
      layers.push({
        attentionNorm: yield* get(`${p}attention_norm`, 1),
        wq: yield* get(`${p}wq`, q),
        wk: yield* get(`${p}wk`, kv),
        wv: yield* get(`${p}wv`, kv),
        wo: yield* get(`${p}wo`, config.dim),
        ffnNorm: yield* get(`${p}ffn_norm`, 1),
        w1: yield* get(`${p}w1`, config.hiddenDim),
        w2: yield* get(`${p}w2`, config.dim),
        w3: yield* get(`${p}w3`, config.hiddenDim),
        ...(config.sandwichNorms
          ? {
            postAttentionNorm: yield* get(`${p}post_attention_norm`, 1),
            postFfnNorm: yield* get(`${p}post_ffn_norm`, 1),
          }
          : {}),
      });
    }
    const tokEmbeddings = yield* get("tok_embeddings", config.vocabSize);
    const weights: LlamaWeights = {
      tokEmbeddings,
      layers,
      norm: yield* get("norm", 1),
      output: tokEmbeddings,
    };
    return { config, weights };
  })));

const PROMPT = [1, 403, 407, 261, 378, 14, 5, 84, 9, 30, 72, 201];

/** The GGUF model's logits after each position of PROMPT, fed one token a step. */
const promptLogits = (path: string, tp: number) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const model = yield* LlamaModel.load({
        source: { format: "gguf", path },
        tp,
        kvCacheDtype: "f32",
      });
      const out: Float32Array[] = [];
      for (const [pos, token] of PROMPT.entries()) {
        yield* model.forward([token], pos);
        out.push(yield* model.logits());
      }
      return out;
    }).pipe(Effect.scoped, Effect.provide(tp === 1 ? InProcessTransport() : WorkersTransport())),
  );

Deno.test("gguf: Q8_0 and Q4_0 files stay quantized on the device and run within 1e-4 of their CPU dequantization at tp 1 and 2; tp 4 would cut a block and is refused", async () => {
  for (const quant of ["Q8_0", "Q4_0"] as const) {
    const { file, tensors } = await stories260KGguf(quant);
    assert.ok(tensors.some((t) => t.type === GGML[quant]), `${quant}: some tensors are quantized`);
    await withFile(file, async (path) => {
      // By default a quantized file stays quantized on the device: its blocks re-quantize to
      // themselves, so the logits below are still those of the file's own values.
      const opened = await Effect.runPromise(Effect.scoped(openGguf(path)));
      assert.equal(opened.defaultWeights, quant.toLowerCase());
      const { config, weights } = await dequantizedWeights(path);
      const reference = await Effect.runPromise(ReferenceLlama.make(config, weights));
      const want = PROMPT.map((token, pos) => reference.forward(token, pos));
      // The quantization is not a no-op: the .bin's logits differ from the file's.
      const bin = await Effect.runPromise(ReferenceLlama.load(STORIES260K_PATH));
      const binLogits = PROMPT.map((token, pos) => bin.forward(token, pos));
      assert.ok(binLogits.some((l, pos) => l.some((v, i) => Math.abs(v - want[pos][i]) > 1e-3)));
      for (const tp of [1, 2]) {
        const got = await promptLogits(path, tp);
        got.forEach((l, pos) =>
          assertClose(l, want[pos], { atol: 1e-4, rtol: 0, what: `${quant} tp ${tp} @${pos}` })
        );
      }
      // tp 4: o_proj's 64 inputs split into 16 per rank, half a 32-element block.
      const refused = await Effect.runPromise(
        Effect.flip(
          LlamaModel.load({ source: { format: "gguf", path }, tp: 4 }).pipe(
            Effect.scoped,
            Effect.provide(WorkersTransport()),
          ),
        ),
      );
      assert.match(
        refused.message,
        /attn_output.weight.*columns \d+\.\.\d+ cut a Q[48]_0 block of 32.*divides 2 blocks/,
      );
    });
  }
});

Deno.test("gguf: a rank loads a Q4_0 file a device block at a time (no whole tensor read), rows of a column span read alone agree with the whole, the tied table uploaded once", async () => {
  const { file } = await stories260KGguf("Q4_0");
  await withFile(file, (path) =>
    Effect.runPromise(Effect.scoped(Effect.gen(function* () {
      const { config, source } = yield* openGguf(path);
      // A row span of a column read is those rows of the whole column read.
      const whole = yield* source.columns("layers.0.w2", 32, 32); // [dim, 32] of [dim, hidden]
      const part = yield* source.columns("layers.0.w2", 32, 32, { start: 5, count: 7 });
      assert.deepEqual(part, whole.slice(5 * 32, 12 * 32));
      const outside = yield* Effect.flip(
        source.columns("layers.0.w2", 0, 32, { start: config.dim - 1, count: 2 }),
      );
      assert.match(outside.message, /rows .* out of range/);

      const reads: Array<{ name: string; elements: number }> = [];
      const recorded: WeightSource = {
        rows: (name, start, count) =>
          Effect.tap(source.rows(name, start, count), (d) =>
            reads.push({ name, elements: d.length })),
        columns: (name, start, count, rows) =>
          Effect.tap(
            source.columns(name, start, count, rows),
            (d) =>
              reads.push({ name, elements: d.length }),
          ),
        vector: (name, length) =>
          Effect.tap(source.vector(name, length), (d) => reads.push({ name, elements: d.length })),
      };
      const gpu = yield* acquireGpu({ label: "block reads" });
      const [plan] = yield* planLlama(config, 1);
      const model = yield* RankLlama.load(gpu, config, plan, recorded, {
        maxTokens: 1,
        weights: "q4_0",
      });
      const widest = Math.max(config.dim, config.hiddenDim);
      for (const { name, elements } of reads) {
        assert.ok(elements <= WEIGHT_BLOCK * widest, `${name}: ${elements} elements in one read`);
      }
      // The vocab (512) is four device blocks: read once, for the embedding, never as "output".
      const table = reads.filter((r) => r.name === "tok_embeddings");
      assert.equal(table.length, Math.ceil(config.vocabSize / WEIGHT_BLOCK));
      assert.ok(!reads.some((r) => r.name === "output"));
      // The tied table is on the device once: an f32 load holds exactly each matrix in whole
      // 128-column blocks, the table counted once, and the Q4_0 load (f32 where k is not whole
      // blocks of 32) well under half that.
      const f32Model = yield* RankLlama.load(gpu, config, plan, source, { maxTokens: 1 });
      const blocked = (k: number, n: number) => 4 * k * Math.ceil(n / WEIGHT_BLOCK) * WEIGHT_BLOCK;
      const { dim, hiddenDim, headDim } = config;
      const [q, kv] = [config.nHeads * headDim, config.nKvHeads * headDim];
      const layer = 8 * dim + blocked(dim, q + 2 * kv) + blocked(q, dim) +
        blocked(dim, 2 * hiddenDim) + blocked(hiddenDim, dim);
      const expected = blocked(dim, config.vocabSize) + config.nLayers * layer + 4 * dim;
      assert.equal(f32Model.weightBytes, expected);
      assert.ok(model.weightBytes < 0.5 * f32Model.weightBytes, `${model.weightBytes} bytes`);
    }))));
});

// ---------------------------------------------------------------------------------------------
// Malformed files

const openFails = (bytes: Uint8Array) =>
  withFile(
    bytes,
    (path) => Effect.runPromise(Effect.flip(Effect.scoped(openGguf(path)))).then((e) => e.message),
  );

Deno.test("gguf: malformed files are LoadErrors that say what is wrong", async () => {
  const { file } = await stories260KGguf("F32");
  const arch = { "general.architecture": { string: "llama" } } as const;
  const one = (type: number, bytes: number) => [{
    name: "token_embd.weight",
    dims: [256, 2],
    type,
    data: new Uint8Array(bytes),
  }];
  const cases: [Uint8Array, RegExp][] = [
    [encodeGguf(arch, [], { version: 1 }), /GGUF version 1 is not supported/],
    [file.slice(0, 200), /truncated inside the GGUF header/],
    [file.slice(0, file.length - 64), /output_norm.*past the end of the \d+-byte file/],
    [encodeGguf(arch, one(GGML.Q2_K, 2 * 84)), /token_embd.*tensor type Q2_K is not supported/],
    [encodeGguf(arch, one(99, 16)), /tensor type #99 is not supported/],
    [
      encodeGguf({ "general.architecture": { string: "mamba" } }, []),
      /general.architecture "mamba" is not supported/,
    ],
  ];
  for (const [bytes, message] of cases) assert.match(await openFails(bytes), message);
  // A file without one of the layer tensors names it.
  const { file: incomplete } = await stories260KGguf("F32", { drop: "blk.4.ffn_up.weight" });
  assert.match(
    await openFails(incomplete),
    /blk\.4\.ffn_up\.weight.*missing|missing.*blk\.4\.ffn_up/,
  );
});

// ---------------------------------------------------------------------------------------------
// Tokenizers

/** GPT-2's byte → printable character map (bytes_to_unicode). */
const byteChars = (): string[] => {
  const printable = [
    ...Array.from({ length: 94 }, (_, i) => 33 + i),
    ...Array.from({ length: 12 }, (_, i) => 161 + i),
    ...Array.from({ length: 82 }, (_, i) => 174 + i),
  ];
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    chars[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  }
  return chars;
};

Deno.test("gguf: a gpt2 (byte-level BPE) vocabulary applies its merges, keeps control tokens silent and round-trips any text", async () => {
  const chars = byteChars();
  const merges = ["Ġ t", "h e", "Ġt he", "l l", "ll o", "he llo"];
  const tokens = [
    ...chars,
    ...merges.map((m) => m.replace(" ", "")),
    "<|bos|>",
    "<|eos|>",
  ];
  const types = tokens.map((_, id) => (id >= 262 ? 3 : 1));
  const file = encodeGguf({
    "general.architecture": { string: "llama" },
    "tokenizer.ggml.model": { string: "gpt2" },
    "tokenizer.ggml.pre": { string: "gpt2" },
    "tokenizer.ggml.tokens": { strings: tokens },
    "tokenizer.ggml.merges": { strings: merges },
    "tokenizer.ggml.token_type": { i32s: types },
    "tokenizer.ggml.bos_token_id": { u32: 262 },
    "tokenizer.ggml.eos_token_id": { u32: 263 },
    "tokenizer.ggml.add_bos_token": { bool: true },
  }, []);
  await withFile(file, async (path) => {
    const tokenizer = await Effect.runPromise(loadGgufTokenizer(path));
    assert.equal(tokenizer.addsBos, true);
    assert.equal(tokenizer.bosId, 262);
    const ids = tokenizer.encode("hello the world", { bos: true, eos: true });
    // hello and " the" merge whole; " world" has no merges: its bytes (Ġ is the space, 32).
    assert.deepEqual(ids, [262, 261, 258, 32, 119, 111, 114, 108, 100, 263]);
    assert.equal(tokenizer.decode(ids), "hello the world");
    const text = "Grüße, 日本! the\nhello\t🙂";
    assert.equal(tokenizer.decode(tokenizer.encode(text, { bos: false, eos: false })), text);
  });
  const unsupported = encodeGguf({
    "tokenizer.ggml.model": { string: "gpt2" },
    "tokenizer.ggml.pre": { string: "deepseek-coder" },
    "tokenizer.ggml.tokens": { strings: tokens },
    "tokenizer.ggml.merges": { strings: merges },
    "tokenizer.ggml.bos_token_id": { u32: 262 },
    "tokenizer.ggml.eos_token_id": { u32: 263 },
  }, []);
  await withFile(unsupported, async (path) => {
    const error = await Effect.runPromise(Effect.flip(loadGgufTokenizer(path)));
    assert.match(error.message, /tokenizer.ggml.pre = "deepseek-coder" is not supported/);
  });
});
