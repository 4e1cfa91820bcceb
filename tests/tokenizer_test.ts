/**
 * The llama2.c tokenizer's O(n log n) merge loop gives exactly run.c's tokens: it is checked
 * against run.c's quadratic loop, kept here as the reference, on real and random strings
 * (unicode, byte fallback, runs of spaces) with the bundled tok512 vocabulary and with random
 * vocabularies full of tied scores (where "leftmost on ties" decides).
 */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { TOK512_PATH } from "../assets/paths.ts";
import {
  loadLlama2cTokenizer,
  parseLlama2cTokenizer,
  type Tokenizer,
} from "../models/tokenizer.ts";

const latin1 = (bytes: Uint8Array) => String.fromCharCode(...bytes);

/** run.c `encode` as first ported: rescan every pair after each merge. */
const referenceEncode = (tok: Tokenizer, text: string, bos: boolean): number[] => {
  const keys = Array.from({ length: tok.vocabSize }, (_, id) => latin1(tok.piece(id)));
  const ids = new Map<string, number>();
  keys.forEach((k, id) => ids.has(k) || ids.set(k, id));
  const lookup = (k: string) => ids.get(k) ?? -1;
  const byteToken = (b: number) => (b + 3 < tok.vocabSize ? b + 3 : 0);
  const bytes = new TextEncoder().encode(text);
  const tokens: number[] = bos ? [1] : [];
  if (bytes.length > 0) tokens.push(lookup(" ") !== -1 ? lookup(" ") : byteToken(0x20));
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) !== 0x80) start = i;
    const next = i + 1 < bytes.length ? bytes[i + 1] : 0;
    if ((next & 0xc0) === 0x80 && i + 1 - start < 4) continue;
    const codepoint = bytes.subarray(start, i + 1);
    const id = lookup(latin1(codepoint));
    if (id !== -1) tokens.push(id);
    else for (const b of codepoint) tokens.push(byteToken(b));
    start = i + 1;
  }
  while (true) {
    let bestScore = Math.fround(-1e10);
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup(keys[tokens[i]] + keys[tokens[i + 1]]);
      if (id !== -1 && tok.scores[id] > bestScore) {
        bestScore = tok.scores[id];
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
};

/** A deterministic generator (mulberry32), so a failure reproduces. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const ALPHABET = [..."aaabcdeeilnorsttuy     .,!?\n\t", "é", "ö", "日", "本", "🙂", "\u0000", "ß"];

const randomText = (next: () => number, maxLength: number) =>
  Array.from(
    { length: Math.floor(next() * maxLength) },
    () => ALPHABET[Math.floor(next() * ALPHABET.length)],
  ).join("");

/** A tokenizer.bin: <unk> <s> </s>, 256 byte tokens, then `merges` with their scores. */
const tokenizerFile = (merges: readonly [string, number][]): Uint8Array => {
  const entries: [Uint8Array, number][] = [
    ...["<unk>", "<s>", "</s>"].map((s): [Uint8Array, number] => [new TextEncoder().encode(s), 0]),
    ...Array.from({ length: 256 }, (_, b): [Uint8Array, number] => [
      new TextEncoder().encode(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
      0,
    ]),
    ...merges.map(([s, score]): [Uint8Array, number] => [new TextEncoder().encode(s), score]),
  ];
  const size = 4 + entries.reduce((n, [bytes]) => n + 8 + bytes.length, 0);
  const data = new Uint8Array(size);
  const view = new DataView(data.buffer);
  view.setInt32(0, 16, true);
  let at = 4;
  for (const [bytes, score] of entries) {
    view.setFloat32(at, score, true);
    view.setInt32(at + 4, bytes.length, true);
    data.set(bytes, at + 8);
    at += 8 + bytes.length;
  }
  return data;
};

/** Random merges over the alphabet, scores from a handful of values so ties abound. */
const randomVocabulary = (next: () => number): [string, number][] => {
  const pieces = new Set<string>([" ", "a", "e", "t", "日", "\u0000"]);
  const list = [...pieces];
  while (list.length < 120) {
    const a = list[Math.floor(next() * list.length)];
    const b = next() < 0.3
      ? ALPHABET[Math.floor(next() * ALPHABET.length)]
      : list[Math.floor(next() * list.length)];
    if ((a + b).length <= 6 && !pieces.has(a + b)) {
      pieces.add(a + b);
      list.push(a + b);
    }
  }
  // A duplicate piece and an empty one: run.c-style lookups must still agree.
  list.push("a", "");
  return list.map((s) => [s, [-3, -1, 0, 0, 2, 2, 5, NaN][Math.floor(next() * 8)]]);
};

Deno.test("tokenizer: the heap merge equals run.c's loop on tok512, real and random text", async () => {
  const tok = await Effect.runPromise(loadLlama2cTokenizer(TOK512_PATH, 512));
  const real = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "héllo wörld 日本 🙂",
    "  two  spaces\nnew line",
    "     ",
    "\u0000\u0001 control \u007f bytes",
    'tom\'s "quoted" (parens) [brackets] {braces} 1234567890 ?!',
    "Tom and Tom and Tom and Tom: the the the the.",
  ];
  const next = random(7);
  const texts = [...real, ...Array.from({ length: 300 }, () => randomText(next, 200))];
  for (const text of texts) {
    for (const bos of [true, false]) {
      assert.deepEqual(
        tok.encode(text, { bos, eos: false }),
        referenceEncode(tok, text, bos),
        JSON.stringify(text),
      );
    }
  }
});

Deno.test("tokenizer: the heap merge equals run.c's loop with tied scores", async () => {
  const next = random(11);
  for (let vocabulary = 0; vocabulary < 20; vocabulary++) {
    const merges = randomVocabulary(next);
    const tok = await Effect.runPromise(
      parseLlama2cTokenizer("random.bin", tokenizerFile(merges), 259 + merges.length),
    );
    for (let i = 0; i < 40; i++) {
      const text = randomText(next, 120);
      assert.deepEqual(
        tok.encode(text, { bos: true, eos: true }),
        [...referenceEncode(tok, text, true), 2],
        `vocabulary ${vocabulary}: ${JSON.stringify(text)}`,
      );
    }
  }
});

Deno.test("tokenizer: a 200k-character prompt encodes to the same tokens as its pieces", async () => {
  // Not a timing test: the quadratic loop would take over ten minutes here. A story repeated with a
  // newline between copies (no merge spans "\n" plus a letter in tok512) is each copy's tokens.
  const tok = await Effect.runPromise(loadLlama2cTokenizer(TOK512_PATH, 512));
  const story = "Once upon a time, there was a little girl named Lily. She loved to play.\n";
  const copies = Math.ceil(200_000 / story.length);
  const ids = tok.encode(story.repeat(copies), { bos: false, eos: false });
  const once = referenceEncode(tok, story, false);
  const again = referenceEncode(tok, story + story, false).slice(once.length);
  assert.deepEqual(ids.slice(0, once.length), once);
  for (let copy = 1; copy < copies; copy++) {
    const at = once.length + (copy - 1) * again.length;
    assert.deepEqual(ids.slice(at, at + again.length), again, `copy ${copy}`);
  }
  assert.equal(ids.length, once.length + (copies - 1) * again.length);
});
