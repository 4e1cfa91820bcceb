/**
 * The tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`):
 * - `llama`: a SentencePiece-style vocabulary (tokens with scores, "▁" for a space, `<0xNN>` byte
 *   tokens), run with llama2.c's BPE by scores;
 * - `gpt2`: a byte-level BPE vocabulary with merges (Llama 3, Qwen), run by the tokenizers library
 *   from a tokenizer.json built here, its pre-tokenizer regex chosen by `tokenizer.ggml.pre`.
 * Control tokens (token_type 3) are special: they print nothing.
 */
import { Effect } from "effect";
import { type LoadError, loadError } from "../errors.ts";
import { huggingFaceTokenizerFromJson } from "../huggingface.ts";
import { makeSentencePieceTokenizer, type TextTokenizer } from "../tokenizer.ts";
import type { GgufFile, GgufValue } from "./format.ts";

/** Pre-tokenizer regexes by `tokenizer.ggml.pre`, as llama.cpp's llama-vocab.cpp has them. */
const PRE_TOKENIZERS: Readonly<Record<string, string>> = {
  "llama-bpe":
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2:
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  gpt2: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
};

const CONTROL = 3;
const USER_DEFINED = 4;

const strings = (value: GgufValue | undefined): string[] | undefined =>
  Array.isArray(value) && value.every((v) => typeof v === "string") ? value as string[] : undefined;

/** The tokenizer.json of a GPT-2-style vocabulary. */
const gpt2Json = (
  tokens: readonly string[],
  merges: readonly string[],
  types: readonly number[],
  pattern: string,
  ignoreMerges: boolean,
) => ({
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: tokens.flatMap((content, id) =>
    types[id] === CONTROL || types[id] === USER_DEFINED
      ? [{
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: types[id] === CONTROL,
      }]
      : []
  ),
  normalizer: null,
  pre_tokenizer: {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  post_processor: null,
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: ignoreMerges,
    vocab: Object.fromEntries(tokens.map((t, id) => [t, id])),
    merges,
  },
});

/** The file's tokenizer, or a `LoadError` naming the key that is missing or not supported. */
export const ggufTokenizer = (gguf: GgufFile): Effect.Effect<TextTokenizer, LoadError> =>
  Effect.suspend((): Effect.Effect<TextTokenizer, LoadError> => {
    const fail = (reason: string) => Effect.fail(loadError(gguf.file, `GGUF tokenizer: ${reason}`));
    const m = gguf.metadata;
    const model = m.get("tokenizer.ggml.model");
    const tokens = strings(m.get("tokenizer.ggml.tokens"));
    if (tokens === undefined) return fail("tokenizer.ggml.tokens is missing or not strings");
    const id = (key: string, fallback?: number) => {
      const v = m.get(key) ?? fallback;
      return typeof v === "number" && Number.isInteger(v) && v >= 0 && v < tokens.length
        ? v
        : undefined;
    };
    const bosId = id("tokenizer.ggml.bos_token_id", model === "llama" ? 1 : undefined);
    const eosId = id("tokenizer.ggml.eos_token_id", model === "llama" ? 2 : undefined);
    if (bosId === undefined || eosId === undefined) {
      return fail("tokenizer.ggml.bos_token_id / eos_token_id missing or out of range");
    }
    const addBos = m.get("tokenizer.ggml.add_bos_token");
    if (model === "llama") {
      const scores = m.get("tokenizer.ggml.scores");
      if (!(scores instanceof Float32Array) || scores.length !== tokens.length) {
        return fail("tokenizer.ggml.scores is missing or not one f32 per token");
      }
      const encoder = new TextEncoder();
      const pieces = tokens.map((t) => encoder.encode(t.replaceAll("\u2581", " ")));
      return Effect.succeed(
        makeSentencePieceTokenizer(scores, pieces, { bosId, eosId, addsBos: addBos !== false }),
      );
    }
    if (model === "gpt2") {
      const merges = strings(m.get("tokenizer.ggml.merges"));
      if (merges === undefined) return fail("tokenizer.ggml.merges is missing or not strings");
      const pre = m.get("tokenizer.ggml.pre") ?? "gpt2";
      const pattern = typeof pre === "string" ? PRE_TOKENIZERS[pre] : undefined;
      if (pattern === undefined) {
        return fail(
          `tokenizer.ggml.pre = ${JSON.stringify(pre)} is not supported (supported: ` +
            `${Object.keys(PRE_TOKENIZERS).join(", ")})`,
        );
      }
      const rawTypes = m.get("tokenizer.ggml.token_type");
      const types = Array.isArray(rawTypes) ? rawTypes as number[] : [];
      const eos = m.get("tokenizer.ggml.eot_token_id");
      const eosIds = typeof eos === "number" && eos !== eosId ? [eosId, eos] : [eosId];
      return huggingFaceTokenizerFromJson(
        gguf.file,
        gpt2Json(tokens, merges, types, pattern, pre === "llama-bpe"),
        { bosId, eosIds, addsBos: addBos === true },
      );
    }
    return fail(
      `tokenizer.ggml.model = ${JSON.stringify(model)} is not supported (llama, gpt2)`,
    );
  });
