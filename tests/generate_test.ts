/**
 * Generation end to end on the real stories260K model: the `generate` stream against the greedy
 * fixture, the stop and decoding rules on a scripted stand-in model, and the CLI as a subprocess:
 * JSON output at tp 2, seeded sampling at tp 1 and tp 2 against full-logit sampling on the CPU
 * reference, a Hugging Face directory, and one-line errors. GPU runs beyond the first use fresh
 * processes (the CLI), as a user would, rather than piling device sessions into this isolate.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Chunk, Effect, Stream } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import { generate, type GenerateOptions } from "../engine/generate.ts";
import { loadTokenizer } from "../models/files.ts";
import { LlamaModel, type StepRow } from "../models/llama.ts";
import { ReferenceLlama } from "../models/reference.ts";
import { Sampler } from "../models/sampler.ts";
import { BOS_ID, EOS_ID, type TextTokenizer } from "../models/tokenizer.ts";
import { withHfModel } from "./fixtures/hf_model.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import { stories260KGguf } from "./fixtures/gguf.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const PUBLISHED = "Once upon a time, there was a little girl named Lily. She loved to play " +
  "outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it " +
  "was too high.";

const fixture = async (): Promise<GreedyFixture> => JSON.parse(await Deno.readTextFile(FIXTURE));
const tokenizer = () => Effect.runPromise(loadTokenizer(MODEL, TOKENIZER));

/** Loads stories260K at tp 1 in this isolate and collects one generation. */
const generateInProcess = (options: GenerateOptions) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const tok = yield* loadTokenizer(MODEL, TOKENIZER);
      const model = yield* LlamaModel.load({ source: { format: "llama2c", path: MODEL }, tp: 1 });
      return Chunk.toArray(yield* Stream.runCollect(generate(model, tok, options)));
    }).pipe(Effect.scoped, Effect.provide(InProcessTransport())),
  );

Deno.test("generate: greedy from BOS at tp 1 equals the fixture and the published text", async () => {
  const expected = await fixture();
  const out = await generateInProcess({
    prompt: "",
    maxTokens: 256,
    stopAtEos: false,
  });
  assert.deepEqual(out.map((t) => t.token), expected.tokens);
  const text = out.map((t) => t.text).join("");
  assert.ok(text.startsWith(PUBLISHED), `greedy text was:\n${text}`);
  assert.equal(text, (await tokenizer()).decode([BOS_ID, ...expected.tokens]));
});

/**
 * A stand-in model that "samples" a scripted sequence, to check stopping and decoding: the
 * prefill and decode calls the engine's steps make (engine/steps.ts), nothing else.
 */
const scriptedModel = (script: number[], seqLen = 512) => {
  const fed: [number[], number][] = [];
  let at = 0;
  const forward = (tokens: readonly number[], pos: number) =>
    Effect.sync(() => void fed.push([[...tokens], pos]));
  const candidates = () =>
    Effect.sync(() => ({
      values: new Float32Array(1),
      indices: Int32Array.of(script[at++]),
    }));
  const model = {
    config: { seqLen, vocabSize: 512 },
    forward,
    candidates,
    forwardWithCandidates: (tokens: readonly number[], pos: number) =>
      Effect.zipRight(forward(tokens, pos), candidates()),
    stepWithHeads: (rows: readonly StepRow[]) =>
      Effect.zipRight(
        forward(rows.map((r) => r.token), rows[0].position),
        Effect.map(candidates(), (c) => [[c]]),
      ),
  } as unknown as LlamaModel;
  return { model, fed };
};

const collect = (model: LlamaModel, tok: TextTokenizer, options: GenerateOptions) =>
  Effect.runPromise(Stream.runCollect(generate(model, tok, options))).then(Chunk.toArray);

Deno.test("generate: EOS and BOS end the stream; text goes with the token that completes it", async () => {
  const tok = await tokenizer();
  const [eAcute1, eAcute2] = [0xc3 + 3, 0xa9 + 3]; // byte-fallback tokens of "é" (U+00E9)
  const lily = tok.encode("Lily", { bos: false, eos: false });
  const { model, fed } = scriptedModel([...lily, eAcute1, eAcute2, EOS_ID, 99]);
  const out = await collect(model, tok, { prompt: "Hi", maxTokens: 50 });
  assert.deepEqual(out.map((t) => t.token), [...lily, eAcute1, eAcute2, EOS_ID]);
  assert.deepEqual(out.slice(-3).map((t) => t.text), ["", "é", ""]);
  assert.equal(out.map((t) => t.text).join(""), " Lilyé");
  // The prompt is prefilled at 0, then every emitted token but the last is fed at the next slot.
  const prompt = tok.encode("Hi", { bos: true, eos: false });
  assert.deepEqual(fed, [
    [prompt, 0],
    ...out.slice(0, -1).map((t, i) => [[t.token], prompt.length + i]),
  ]);

  const bos = scriptedModel([...lily, BOS_ID, 99]);
  const stopped = await collect(bos.model, tok, { prompt: "", maxTokens: 50 });
  assert.deepEqual(stopped.map((t) => t.token), [...lily, BOS_ID]);
  const kept = await collect(scriptedModel([EOS_ID, 99]).model, tok, {
    prompt: "",
    maxTokens: 2,
    stopAtEos: false,
  });
  assert.deepEqual(kept.map((t) => t.token), [EOS_ID, 99]);

  // An unfinished character at the end is flushed (as U+FFFD) into the last token's text.
  const cut = await collect(scriptedModel([eAcute1]).model, tok, { prompt: "", maxTokens: 1 });
  assert.deepEqual(cut, [{ token: eAcute1, text: "\uFFFD" }]);

  // A token the tokenizer does not know prints as U+FFFD, as in the engine (one rule for both
  // loops: generatedText), and the stream goes on.
  const unknown = await collect(scriptedModel([tok.vocabSize + 7, 99]).model, tok, {
    prompt: "",
    maxTokens: 2,
  });
  assert.deepEqual(unknown.map((t) => t.token), [tok.vocabSize + 7, 99]);
  assert.equal(unknown[0].text, "\uFFFD");
  assert.equal(unknown[1].text, tok.streamDecoder(tok.vocabSize + 7).push(99));
});

Deno.test("generate: the sequence stops at seq_len; bad options are typed errors", async () => {
  const tok = await tokenizer();
  const script = Array.from({ length: 20 }, (_, i) => 300 + i);
  // As in run.c, every token but the last must fit in the KV cache: seq_len - prompt + 1 tokens.
  const { model, fed } = scriptedModel(script, 8);
  const out = await collect(model, tok, { prompt: "", maxTokens: 50 });
  assert.deepEqual(out.map((t) => t.token), script.slice(0, 8));
  assert.equal(fed[fed.length - 1][1], 7, "the last token fed goes to position seq_len - 1");
  const prompt = "Lily Lily Lily Lily Lily Lily Lily"; // BOS + 7 tokens = seq_len
  assert.equal(tok.encode(prompt, { bos: true, eos: false }).length, 8);
  const full = await collect(scriptedModel(script, 8).model, tok, { prompt, maxTokens: 50 });
  assert.equal(full.length, 1);

  const fail = (options: GenerateOptions) =>
    Effect.runPromise(Effect.flip(Stream.runDrain(generate(model, tok, options))));
  const failures = [
    await fail({ prompt: "", maxTokens: 0 }),
    await fail({ prompt: `${prompt} Lily`, maxTokens: 1 }),
    await fail({ prompt: "", maxTokens: 1, temperature: -1 }),
    await fail({ prompt: "", maxTokens: 1, temperature: 1, seed: 0 }),
  ];
  assert.deepEqual(failures.map((e) => e._tag), [
    "GenerateInputError",
    "GenerateInputError",
    "GenerateInputError",
    "ConfigError",
  ]);
  assert.match(failures[1].message, /prompt is 9 tokens .* seq_len 8/);
});

// ---------------------------------------------------------------------------------------------
// CLI

const cli = async (...args: string[]) => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", "cli/generate.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
};

Deno.test("cli: --json at tp 2 over Workers prints one JSON object with the fixture's tokens", async () => {
  const expected = await fixture();
  const { code, stdout, stderr } = await cli(
    ...["--model", MODEL, "--tokenizer", TOKENIZER, "--tp", "2", "--share-adapter", "--prompt", ""],
    ...["--max-tokens", "40", "--json"],
  );
  assert.equal(code, 0, stderr);
  assert.equal(stdout.trimEnd().split("\n").length, 1, `stdout was:\n${stdout}`);
  const result = JSON.parse(stdout);
  assert.deepEqual(Object.keys(result), ["tokens", "text"]);
  assert.deepEqual(result.tokens, expected.tokens.slice(0, 40));
  assert.ok(PUBLISHED.startsWith(result.text), result.text);
  assert.match(stderr, /40 tokens .* tp 2, workers transport/);
});

const SAMPLING = { prompt: "Once upon a time, a cat", maxTokens: 32, seed: 42 } as const;

/** Sampled ids from the CLI (a fresh process per run, like a user's). */
const sampleWithCli = async (tp: number) => {
  const { code, stdout, stderr } = await cli(
    ...["--model", MODEL, "--tokenizer", TOKENIZER, "--tp", String(tp), "--share-adapter"],
    ...["--prompt", SAMPLING.prompt, "--max-tokens", String(SAMPLING.maxTokens)],
    ...["--temperature", "0.8", "--top-p", "0.9", "--seed", String(SAMPLING.seed), "--json"],
  );
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout).tokens as number[];
};

Deno.test("sampling: same seed, same tokens; tp 1 and tp 2 equal full-logit sampling", async () => {
  const tp1 = await sampleWithCli(1);
  assert.deepEqual(await sampleWithCli(1), tp1, "same seed, same tokens");
  assert.deepEqual(await sampleWithCli(2), tp1, "tp 2 over Workers samples the same tokens");

  // run.c's loop on the CPU reference: full logits, the same sampler and seed.
  const reference = await Effect.runPromise(ReferenceLlama.load(MODEL));
  const sampler = await Effect.runPromise(
    Sampler.make({ vocabSize: 512, temperature: 0.8, topp: 0.9, seed: SAMPLING.seed }),
  );
  const prompt = (await tokenizer()).encode(SAMPLING.prompt, { bos: true, eos: false });
  let logits: Float32Array = new Float32Array(0);
  prompt.forEach((token, pos) => logits = reference.forward(token, pos));
  const cpu: number[] = [];
  for (let pos = prompt.length; cpu.length < SAMPLING.maxTokens; pos++) {
    const next = sampler.sample(logits);
    cpu.push(next);
    if (next === BOS_ID || next === EOS_ID) break; // the CLI stops there too
    logits = reference.forward(next, pos);
  }
  assert.deepEqual(tp1, cpu, "candidate sampling equals full-logit sampling");
});

Deno.test("cli: a directory is a Hugging Face model with its own tokenizer.json", async () => {
  await withHfModel({ dtype: "F32", shards: 1, tied: false }, async ({ dir, config }) => {
    const { code, stdout, stderr } = await cli(
      ...["--model", dir, "--tp", "2", "--share-adapter"],
      ...["--prompt", "", "--max-tokens", "5", "--json"],
    );
    assert.equal(code, 0, stderr);
    const { tokens, text } = JSON.parse(stdout);
    assert.ok(tokens.length >= 1 && tokens.length <= 5, stdout);
    assert.ok(tokens.every((t: number) => Number.isInteger(t) && t < config.vocabSize));
    assert.equal(typeof text, "string");
  });
});

Deno.test("cli: a .gguf file needs no other flag: stories260K as GGUF at tp 2 prints the fixture's tokens", async () => {
  const expected = await fixture();
  const { file } = await stories260KGguf("F32");
  const dir = await Deno.makeTempDir({ prefix: "tessera-cli-gguf-" });
  try {
    // Named without the extension: the magic, not the name, says GGUF.
    const path = `${dir}/stories260K`;
    await Deno.writeFile(path, file);
    const { code, stdout, stderr } = await cli(
      ...["--model", path, "--tp", "2", "--share-adapter"],
      ...["--prompt", "", "--max-tokens", "24", "--json"],
    );
    assert.equal(code, 0, stderr);
    assert.deepEqual(JSON.parse(stdout).tokens, expected.tokens.slice(0, 24));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: failures print one `error:` line and exit non-zero", async () => {
  const model = ["--model", MODEL, "--tokenizer", TOKENIZER];
  const cases = [
    { args: ["--model", `${ROOT}/no/such/model.bin`], code: 1, says: /no such file/ },
    { args: [...model, "--tp", "abc"], code: 2, says: /--tp must be a positive integer/ },
    {
      args: [...model, "--tp", "3", "--share-adapter"],
      code: 1,
      says: /tp = 3 does not divide n_heads = 8/,
    },
    { args: [...model, "--bogus"], code: 2, says: /Unknown option '--bogus'/ },
    { args: [...model, "--temperature", "hot"], code: 2, says: /--temperature must be/ },
    { args: [...model, "--log-level", "loud"], code: 2, says: /--log-level must be one of/ },
    { args: [...model, "--log-format", "xml"], code: 2, says: /--log-format must be logfmt/ },
    { args: [...model, "--trace", ""], code: 2, says: /--trace needs a file path/ },
  ];
  const results = await Promise.all(cases.map((c) => cli(...c.args)));
  results.forEach(({ code, stdout, stderr }, i) => {
    const lines = stderr.trimEnd().split("\n");
    assert.equal(code, cases[i].code, `${cases[i].args.join(" ")}: ${stderr}`);
    assert.equal(lines.length, 1, `one line on stderr, got:\n${stderr}`);
    assert.match(lines[0], /^error: /);
    assert.match(lines[0], cases[i].says);
    assert.equal(stdout, "");
  });
});
