/**
 * CPU side of llama2.c models: checkpoint loader (ranged reads, validation), tokenizer, CPU
 * reference forward pass (against the real stories260K model and the greedy fixture) and sampler.
 */
import assert from "node:assert/strict";
import { Effect } from "effect";
import type { LlamaConfig } from "../models/config.ts";
import { ConfigError, LoadError } from "../models/errors.ts";
import {
  encodeLlama2cHeader,
  planLlama2cLayout,
  readColumns,
  readLlama2cHeader,
  readRows,
  tensorEntry,
} from "../models/llama2c.ts";
import { type LlamaWeights, ReferenceLlama } from "../models/reference.ts";
import {
  argmax,
  chooseToken,
  mergeCandidates,
  Sampler,
  shardCandidates,
  XorShift64Star,
} from "../models/sampler.ts";
import { BOS_ID, EOS_ID, loadLlama2cTokenizer, type Tokenizer } from "../models/tokenizer.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { assertClose, maxAbsDiff, randomFloats } from "./tolerance.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const PUBLISHED = "Once upon a time, there was a little girl named Lily. She loved to play " +
  "outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it " +
  "was too high.";

const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect);
/** The typed failure of an effect that must fail. */
const failureOf = <A, E>(effect: Effect.Effect<A, E>): Promise<E> =>
  Effect.runPromise(Effect.flip(effect));

let tokenizerCache: Tokenizer | undefined;
const tokenizer = async () => tokenizerCache ??= await run(loadLlama2cTokenizer(TOKENIZER, 512));

/** Writes bytes to a fresh temp file, runs `f` on its path, removes it. */
const withTempFile = async <T>(bytes: Uint8Array, f: (path: string) => Promise<T>) => {
  const path = await Deno.makeTempFile({ prefix: "tessera-models-", suffix: ".bin" });
  try {
    await Deno.writeFile(path, bytes);
    return await f(path);
  } finally {
    await Deno.remove(path);
  }
};

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const TINY: LlamaConfig = {
  dim: 8,
  hiddenDim: 12,
  nLayers: 2,
  nHeads: 2,
  nKvHeads: 1,
  vocabSize: 10,
  seqLen: 4,
  headDim: 4,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeLayout: "interleaved",
  sharedClassifier: false,
};

/** A valid llama2.c file whose every f32 equals its own element index after the header. */
const indexedCheckpoint = (config: LlamaConfig): Uint8Array => {
  const { totalBytes } = planLlama2cLayout(config);
  const body = Float32Array.from({ length: (totalBytes - 28) / 4 }, (_, i) => i);
  return concat(encodeLlama2cHeader(config), new Uint8Array(body.buffer));
};

const headerBytes = (ints: number[]) => new Uint8Array(Int32Array.from(ints).buffer);

// ---------------------------------------------------------------------------------------------
// Loader

Deno.test("llama2c header: stories260K config and tensor layout", async () => {
  const { config, layout } = await run(readLlama2cHeader(MODEL));
  assert.deepEqual(
    [config.dim, config.hiddenDim, config.nLayers, config.nHeads, config.nKvHeads],
    [64, 172, 5, 8, 4],
  );
  assert.deepEqual([config.vocabSize, config.seqLen, config.headDim], [512, 512, 8]);
  assert.equal(config.sharedClassifier, true);
  assert.equal(config.ropeLayout, "interleaved");
  assert.equal(layout.fileSize, 1_056_540);
  const emb = layout.tensors.get("tok_embeddings")!;
  assert.deepEqual([emb.offset, emb.shape], [28, [512, 64]]);
  assert.equal(layout.tensors.get("output")!.offset, emb.offset, "shared classifier aliases");
  assert.deepEqual(layout.tensors.get("layers.0.wk")!.shape, [32, 64]);
  assert.deepEqual(layout.tensors.get("layers.4.w2")!.shape, [64, 172]);
  assert.deepEqual(layout.tensors.get("layers.4.w3")!.shape, [172, 64]);
  assert.deepEqual(layout.tensors.get("norm")!.shape, [64]);
  // wq of layer 1 follows wq of layer 0 (tensors are stacked over layers by kind).
  const wq0 = layout.tensors.get("layers.0.wq")!;
  assert.equal(layout.tensors.get("layers.1.wq")!.offset, wq0.offset + 64 * 64 * 4);
  const imag = layout.tensors.get("freq_cis_imag")!;
  assert.equal(imag.offset + imag.byteLength, layout.fileSize);
  const missing = await failureOf(tensorEntry(layout, "layers.9.wq"));
  assert.equal(missing._tag, "LoadError");
  assert.equal(missing.tensor, "layers.9.wq");
});

Deno.test("llama2c ranged reads: rows and column spans land on the right bytes", async () => {
  await withTempFile(indexedCheckpoint(TINY), async (path) => {
    const { layout } = await run(readLlama2cHeader(path));
    const w2 = layout.tensors.get("layers.1.w2")!; // [dim 8, hidden 12]
    const base = (w2.offset - 28) / 4;
    const rows = await run(readRows(path, w2, 2, 3));
    assert.deepEqual(Array.from(rows), Array.from({ length: 36 }, (_, i) => base + 24 + i));
    const cols = await run(readColumns(path, w2, 5, 4));
    const expected = Array.from(
      { length: 8 * 4 },
      (_, i) => base + Math.floor(i / 4) * 12 + 5 + i % 4,
    );
    assert.deepEqual(Array.from(cols), expected);
    const output = layout.tensors.get("output")!; // separate classifier: after the RoPE tables
    const imag = layout.tensors.get("freq_cis_imag")!;
    assert.equal(output.offset, imag.offset + imag.byteLength);
    const norm = layout.tensors.get("norm")!;
    assert.equal((await run(readRows(path, norm, 0, 1))).length, 8, "a vector is one row");
  });
});

Deno.test("llama2c ranged reads agree with whole tensors of the real model", async () => {
  const { layout } = await run(readLlama2cHeader(MODEL));
  const w1 = layout.tensors.get("layers.2.w1")!; // [172, 64]
  const whole = await run(readRows(MODEL, w1, 0, 172));
  assert.deepEqual(await run(readRows(MODEL, w1, 40, 7)), whole.slice(40 * 64, 47 * 64));
  const cols = await run(readColumns(MODEL, w1, 16, 16));
  for (let r = 0; r < 172; r++) {
    assert.deepEqual(cols.slice(r * 16, r * 16 + 16), whole.slice(r * 64 + 16, r * 64 + 32));
  }
  const emb = await run(readRows(MODEL, layout.tensors.get("tok_embeddings")!, 100, 2));
  assert.deepEqual(await run(readRows(MODEL, layout.tensors.get("output")!, 100, 2)), emb);
});

Deno.test("llama2c ranged reads out of range fail with LoadError", async () => {
  const { layout } = await run(readLlama2cHeader(MODEL));
  const wo = layout.tensors.get("layers.0.wo")!;
  for (
    const read of [
      readRows(MODEL, wo, 60, 5),
      readRows(MODEL, wo, -1, 2),
      readRows(MODEL, wo, 0.5, 1),
      readColumns(MODEL, wo, 0, 65),
    ]
  ) {
    const error = await failureOf(read);
    assert.ok(error instanceof LoadError);
    assert.equal(error.tensor, "layers.0.wo");
    assert.match(error.message, /out of range/);
  }
  // A file that shrank after its header was read: the read itself reports the end of file.
  await withTempFile(indexedCheckpoint(TINY), async (path) => {
    const { layout } = await run(readLlama2cHeader(path));
    await Deno.truncate(path, 200);
    const error = await failureOf(readRows(path, layout.tensors.get("output")!, 0, 1));
    assert.match(error.message, /unexpected end of file/);
  });
});

Deno.test("llama2c loader rejects broken files with LoadError naming file and tensor", async () => {
  const real = await Deno.readFile(MODEL);
  const cases: { name: string; bytes: Uint8Array; tensor?: string; reason: RegExp }[] = [
    { name: "too short for the header", bytes: real.slice(0, 10), reason: /too short/ },
    {
      name: "truncated inside a tensor",
      bytes: real.slice(0, 500_000),
      tensor: "layers.2.w1",
      reason: /truncated: 500000 bytes .* ends 32516 bytes into this 44032-byte tensor/,
    },
    {
      name: "truncated at a tensor boundary",
      bytes: real.slice(0, 28 + 512 * 64 * 4),
      tensor: "layers.0.attention_norm",
      reason: /ends exactly where this tensor should start/,
    },
    {
      name: "trailing bytes",
      bytes: concat(real, new Uint8Array(12)),
      tensor: "freq_cis_imag",
      reason: /12 trailing bytes/,
    },
    {
      name: "separate classifier promised but missing",
      bytes: concat(headerBytes([64, 172, 5, 8, 4, -512, 512]), real.slice(28)),
      tensor: "output",
      reason: /promises a separate classifier/,
    },
    {
      name: "absurd dims",
      bytes: concat(headerBytes([1 << 30, 172, 5, 8, 4, 512, 512]), real.slice(28)),
      reason: /dim = 1073741824 is implausibly large/,
    },
    {
      name: "zero layers",
      bytes: concat(headerBytes([64, 172, 0, 8, 4, 512, 512]), real.slice(28)),
      reason: /n_layers = 0 must be positive/,
    },
    {
      name: "heads not a multiple of kv heads",
      bytes: concat(headerBytes([64, 172, 5, 8, 3, 512, 512]), real.slice(28)),
      reason: /n_heads 8 is not a multiple of n_kv_heads 3/,
    },
    {
      name: "not a legacy checkpoint (ak42 magic)",
      bytes: concat(headerBytes([0x616b3432, 2, 64, 172, 5, 8, 4]), real.slice(28)),
      reason: /version-2 export/,
    },
  ];
  for (const c of cases) {
    await withTempFile(c.bytes, async (path) => {
      const error = await failureOf(readLlama2cHeader(path));
      assert.equal(error._tag, "LoadError", c.name);
      assert.equal(error.file, path, c.name);
      assert.ok(error.message.includes(path), `${c.name}: message names the file`);
      assert.ok(!error.message.includes("\n"), `${c.name}: one line`);
      assert.equal(error.tensor, c.tensor, `${c.name}: tensor`);
      if (c.tensor) assert.ok(error.message.includes(c.tensor), `${c.name}: message names tensor`);
      assert.match(error.reason, c.reason, c.name);
    });
  }
  const missing = await failureOf(readLlama2cHeader("/nonexistent/model.bin"));
  assert.match(missing.message, /\/nonexistent\/model\.bin.*cannot open/);
});

// ---------------------------------------------------------------------------------------------
// Reference forward pass

Deno.test("reference: greedy from BOS reproduces the published text and the fixture", async () => {
  const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
  const model = await run(ReferenceLlama.load(MODEL));
  const { tokens, logits } = model.generateGreedy([BOS_ID], 256, 4);
  const text = (await tokenizer()).decode([BOS_ID, ...tokens]);
  assert.ok(text.startsWith(PUBLISHED), `greedy text was:\n${text}`);
  assert.equal(tokens.length, 256);
  assert.deepEqual(tokens, fixture.tokens);
  assert.equal(fixture.logits.length, 4);
  logits.forEach((l, pos) =>
    assertClose(l, fixture.logits[pos], { atol: 1e-5, rtol: 1e-5, what: `logits@${pos}` })
  );
});

/** Hugging Face's q/k row order: within each head, rows (2i, 2i+1) move to (i, i + headDim/2). */
const permuteForHalfRope = (w: Float32Array, heads: number, headDim: number, cols: number) => {
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < headDim; j++) {
      const to = h * headDim + (j % 2) * (headDim / 2) + Math.floor(j / 2);
      out.set(w.subarray((h * headDim + j) * cols, (h * headDim + j + 1) * cols), to * cols);
    }
  }
  return out;
};

Deno.test("reference: half RoPE on HF-permuted q/k rows equals interleaved RoPE", async () => {
  const model = await run(ReferenceLlama.load(MODEL));
  const c = model.config;
  const permuted: LlamaWeights = {
    ...model.weights,
    layers: model.weights.layers.map((l) => ({
      ...l,
      wq: permuteForHalfRope(l.wq, c.nHeads, c.headDim, c.dim),
      wk: permuteForHalfRope(l.wk, c.nKvHeads, c.headDim, c.dim),
    })),
  };
  const half = await run(ReferenceLlama.make({ ...c, ropeLayout: "half" }, permuted));
  const prompt = (await tokenizer()).encode("Once upon a time, Lily", { bos: true, eos: false });
  prompt.forEach((token, pos) =>
    assertClose(half.forward(token, pos), model.forward(token, pos), {
      atol: 1e-4,
      rtol: 1e-4,
      what: `logits@${pos}`,
    })
  );
  // And the permutation matters: interleaved RoPE on permuted rows is a different model once
  // positions rotate (position 0 has no rotation, so it still agrees there).
  const wrong = await run(ReferenceLlama.make(c, permuted));
  assertClose(wrong.forward(prompt[0], 0), model.forward(prompt[0], 0), { atol: 1e-4 });
  wrong.forward(prompt[1], 1);
  model.forward(prompt[1], 1);
  assert.ok(maxAbsDiff(wrong.forward(prompt[2], 2), model.forward(prompt[2], 2)) > 1e-2);
});

Deno.test("reference: mismatched weights and bad positions are rejected", async () => {
  const model = await run(ReferenceLlama.load(MODEL));
  const broken = { ...model.weights, norm: new Float32Array(3) };
  const error = await failureOf(ReferenceLlama.make(model.config, broken));
  assert.ok(error instanceof ConfigError);
  assert.match(error.message, /norm has 3 elements, expected 64/);
  assert.throws(() => model.forward(512, 0), RangeError);
  assert.throws(() => model.forward(1, 512), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Tokenizer

Deno.test("tokenizer: encode matches llama2.c run.c", async () => {
  const tok = await tokenizer();
  assert.equal(tok.vocabSize, 512);
  assert.deepEqual(tok.encode("Once upon a time", { bos: true, eos: false }), [
    1,
    403,
    407,
    261,
    378,
  ]);
  assert.deepEqual(tok.encode("Once upon a time", { bos: true, eos: true }), [
    1,
    403,
    407,
    261,
    378,
    2,
  ]);
  assert.deepEqual(tok.encode("Once upon a time", { bos: false, eos: false }), [
    403,
    407,
    261,
    378,
  ]);
  assert.deepEqual(tok.encode("", { bos: true, eos: false }), [BOS_ID]);
  assert.deepEqual(tok.encode("", { bos: false, eos: true }), [EOS_ID]);
  // Ids below were produced by a C build of run.c's encode on the same tokenizer.
  assert.deepEqual(
    tok.encode("héllo wörld 日本 🙂", { bos: true, eos: false }),
    [
      1,
      270,
      485,
      306,
      414,
      263,
      198,
      185,
      420,
      341,
      410,
      233,
      154,
      168,
      233,
      159,
      175,
      410,
      243,
      162,
      156,
      133,
    ],
  );
  assert.deepEqual(
    tok.encode("  two  spaces\nnew line", { bos: true, eos: false }),
    [1, 410, 410, 259, 424, 414, 410, 262, 427, 412, 331, 419, 13, 416, 411, 424, 278, 271, 411],
  );
});

Deno.test("tokenizer: decode follows run.c and round-trips text", async () => {
  const tok = await tokenizer();
  assert.equal(tok.decodeToken(BOS_ID, 403), "Once", "space after BOS is stripped");
  assert.equal(tok.decodeToken(403, 407), " upon");
  assert.equal(tok.decodeToken(403, 13), "\n", "<0x0A> is a raw byte");
  assert.equal(tok.decodeToken(BOS_ID, EOS_ID), "\n</s>\n");
  for (
    const s of [
      "Once upon a time",
      "Lily's mom said, \"Lily, let's go!\"",
      "héllo wörld 日本 🙂",
      "  two  spaces\nnew line\t",
      "ÿĀ x",
      "a",
      "",
    ]
  ) {
    assert.equal(tok.decode(tok.encode(s, { bos: true, eos: true })), s, JSON.stringify(s));
  }
  // "日" is three byte tokens; streaming emits it whole once its last byte arrives.
  const ids = tok.encode("日", { bos: true, eos: false }).slice(2);
  assert.deepEqual(ids, [233, 154, 168]);
  const stream = tok.streamDecoder(410);
  assert.deepEqual(ids.map((t) => stream.push(t)), ["", "", "日"]);
  assert.equal(stream.flush(), "");
  assert.equal(tok.decodeToken(0, 233), "\uFFFD", "a lone lead byte is not valid text");
  const cut = tok.streamDecoder();
  cut.push(233);
  assert.equal(cut.flush(), "\uFFFD", "an unfinished character flushes as U+FFFD");
});

Deno.test("tokenizer: broken files fail with LoadError", async () => {
  const real = await Deno.readFile(TOKENIZER);
  const trailing = await failureOf(loadLlama2cTokenizer(TOKENIZER, 511));
  assert.ok(trailing instanceof LoadError);
  assert.match(trailing.message, /tok512\.bin.*trailing bytes after 511 tokens/);
  await withTempFile(real.slice(0, 3000), async (path) => {
    const error = await failureOf(loadLlama2cTokenizer(path, 512));
    assert.ok(error.message.includes(path));
    assert.match(error.reason, /file ends at byte 3000 inside .* token \d+ of 512/);
  });
  await withTempFile(concat(headerBytes([-5]), real.slice(4)), async (path) => {
    const error = await failureOf(loadLlama2cTokenizer(path, 512));
    assert.match(error.reason, /max_token_length -5/);
  });
});

// ---------------------------------------------------------------------------------------------
// Sampler

Deno.test("sampler: xorshift64* matches run.c's random_u32 / random_f32", () => {
  const rng = new XorShift64Star(42);
  assert.deepEqual(
    [rng.nextU32(), rng.nextU32(), rng.nextU32(), rng.nextU32()],
    [1456360119, 3359763283, 3393612768, 4054632243],
  );
  const f = new XorShift64Star(1234567890123n);
  assert.deepEqual(
    [f.nextF32(), f.nextF32(), f.nextF32()].map((x) => Number(x.toPrecision(9))),
    [0.936711371, 0.709576666, 0.291406035],
  );
});

const sampleStream = async (seed: number, temperature: number, topp: number, steps: number) => {
  const model = await run(ReferenceLlama.load(MODEL));
  const sampler = await run(Sampler.make({ vocabSize: 512, temperature, topp, seed }));
  const out: number[] = [];
  let token = BOS_ID;
  for (let pos = 0; pos < steps; pos++) out.push(token = sampler.sample(model.forward(token, pos)));
  return out;
};

Deno.test("sampler: same seed, same tokens; temperature 0 is argmax", async () => {
  const a = await sampleStream(1337, 1.0, 0.9, 64);
  assert.deepEqual(await sampleStream(1337, 1.0, 0.9, 64), a);
  assert.notDeepEqual(await sampleStream(1338, 1.0, 0.9, 64), a);
  const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
  assert.deepEqual(await sampleStream(7, 0, 0.9, 64), fixture.tokens.slice(0, 64));
  const logits = randomFloats(512, 3, 5);
  const greedy = await run(Sampler.make({ vocabSize: 512, temperature: 0, topp: 0.9, seed: 1 }));
  assert.equal(greedy.sample(logits), argmax(logits));
  assert.equal(greedy.sampleCandidates(shardCandidates(logits, 4)).token, argmax(logits));
});

Deno.test("sampler: top-k candidates from shards sample like full logits when they cover the nucleus", async () => {
  const fixture: GreedyFixture = JSON.parse(await Deno.readTextFile(FIXTURE));
  const ranks = 4, shard = 128, k = 64;
  // Real next-token distributions: the model's logits along a greedy run.
  const model = await run(ReferenceLlama.load(MODEL));
  const logitSets = [BOS_ID, ...fixture.tokens.slice(0, 47)].map((t, pos) => model.forward(t, pos));
  for (const [temperature, topp] of [[1.0, 0.9], [0.7, 0.5], [1.3, 0.95]]) {
    const opts = { vocabSize: 512, temperature, topp, seed: 2024 };
    const full = await run(Sampler.make(opts));
    const cand = await run(Sampler.make(opts));
    let exact = 0;
    let notGreedy = 0;
    for (const logits of logitSets) {
      const lists = Array.from(
        { length: ranks },
        (_, r) =>
          shardCandidates(logits.subarray(r * shard, (r + 1) * shard), k, r * shard, temperature),
      );
      const merged = mergeCandidates(lists, k);
      const want = full.sample(logits);
      const got = cand.sampleCandidates(merged);
      if (want !== argmax(logits)) notGreedy++;
      if (got.exact) {
        exact++;
        assert.equal(got.token, want, `T=${temperature} p=${topp}`);
      }
    }
    assert.ok(exact >= logitSets.length * 0.8, `only ${exact}/${logitSets.length} nuclei fit`);
    assert.ok(notGreedy > 0, "the draws must exercise more than the top token");
  }
  // A flat distribution's nucleus cannot fit in 16 candidates, and the sampler says so.
  const flat = randomFloats(512, 9, 0.01);
  const sampler = await run(Sampler.make({ vocabSize: 512, temperature: 1, topp: 0.9, seed: 5 }));
  assert.equal(sampler.sampleCandidates(shardCandidates(flat, 16, 0, 1)).exact, false);
  // Candidates covering the whole vocabulary are exact for plain multinomial sampling too.
  const plain = { vocabSize: 512, temperature: 1, topp: 1, seed: 77 };
  const [s1, s2] = [await run(Sampler.make(plain)), await run(Sampler.make(plain))];
  for (const logits of logitSets.slice(0, 10)) {
    const all = s2.sampleCandidates(shardCandidates(logits, 512, 0, 1));
    assert.deepEqual(all, { token: s1.sample(logits), exact: true });
  }
});

Deno.test("sampler: impossible settings are ConfigErrors", async () => {
  const base = { vocabSize: 512, temperature: 1, topp: 0.9, seed: 1 };
  for (
    const [opts, pattern] of [
      [{ ...base, seed: 0 }, /seed must not be 0/],
      [{ ...base, temperature: -1 }, /temperature -1/],
      [{ ...base, vocabSize: 0 }, /vocabSize 0/],
      [{ ...base, topp: NaN }, /topp NaN/],
    ] as const
  ) {
    const error = await failureOf(Sampler.make(opts));
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, pattern);
  }
});

Deno.test("sampler: a vocabulary padded past the tokenizer's never yields a padding id", async () => {
  // 8 logits, a tokenizer of 6: ids 6 and 7 are padding rows and have the largest logits.
  const logits = Float32Array.from([0.5, 2, 1, 0.1, 1.5, 0.3, 9, 8]);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const top = (k: number) => ({
    values: Float32Array.from(order.slice(0, k), (i) => logits[i]),
    indices: Int32Array.from(order.slice(0, k)),
  });
  const full = Effect.succeed(logits);
  const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e);
  // Greedy: the best real token, from the candidates, or from the logits when all are padding.
  assert.equal(await run(chooseToken(undefined, top(4), full, 6, 8)), 1);
  assert.equal(await run(chooseToken(undefined, top(2), full, 6, 8)), 1);
  // Unpadded, the top candidate is taken as it is.
  assert.equal(await run(chooseToken(undefined, top(1), full, 8, 8)), 6);
  // Sampling: many draws, none a padding id, and the real tokens in their proportions.
  const sampler = await run(Sampler.make({ vocabSize: 6, temperature: 1, topp: 0, seed: 7 }));
  const counts = new Array(8).fill(0);
  for (let i = 0; i < 3000; i++) counts[await run(chooseToken(sampler, top(3), full, 6, 8))]++;
  assert.deepEqual(counts.slice(6), [0, 0]);
  const probs = Array.from(logits.subarray(0, 6), Math.exp);
  const mass = probs.reduce((a, b) => a + b, 0);
  counts.slice(0, 6).forEach((n, i) =>
    assert.ok(Math.abs(n / 3000 - probs[i] / mass) < 0.04, `token ${i}: ${n / 3000}`)
  );
});
