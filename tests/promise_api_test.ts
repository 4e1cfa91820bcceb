/**
 * The plain Promise API (`Tessera`, promise/) on the real stories260K model: the same tokens as
 * the Effect `generate()` and the greedy fixture at tp 1 (in-process) and tp 2 (Workers);
 * failures thrown as their typed classes (not `FiberFailure`); `break` and `AbortSignal` end a
 * generation and the next one is unaffected; concurrent calls are serialized; `close()` is
 * idempotent, stops every rank process and makes later calls throw `ModelClosed`; an aborted
 * load leaves no rank running; bad generation options are a `GenerateInputError`.
 */
import assert from "node:assert/strict";
import { Chunk, Effect, type Layer, Stream } from "effect";
import { InProcessTransport } from "../ranks/transports.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import {
  ConfigError,
  generate,
  type GeneratedToken,
  GenerateInputError,
  type GenerateOptions,
  LlamaModel,
  LoadError,
  loadTokenizer,
  ModelClosed,
  PlanError,
  Tessera,
  type TesseraGenerateOptions,
} from "../mod.ts";
import type { GreedyFixture } from "./fixtures/make_stories260K_greedy.ts";

const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const FIXTURE = new URL("./fixtures/stories260K_greedy.json", import.meta.url);
const fixture = async (): Promise<GreedyFixture> => JSON.parse(await Deno.readTextFile(FIXTURE));

const PROMPT = "Once upon a time";
const GREEDY: TesseraGenerateOptions = { maxTokens: 48, temperature: 0 };
const SAMPLED: TesseraGenerateOptions = { maxTokens: 48, temperature: 0.8, topP: 0.9, seed: 42 };
/** From BOS alone, not stopping at EOS: what the fixture holds. */
const FROM_BOS: TesseraGenerateOptions = { maxTokens: 256, stopAtEos: false };

/** Every piece of one generation. */
const collect = async (pieces: AsyncIterable<GeneratedToken>): Promise<GeneratedToken[]> => {
  const out: GeneratedToken[] = [];
  for await (const piece of pieces) out.push(piece);
  return out;
};

/** The same generations through the Effect API, on a model of its own. */
const effectGenerations = (
  tp: number,
  transport: Layer.Layer<Transport>,
  runs: readonly GenerateOptions[],
) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const tokenizer = yield* loadTokenizer(MODEL, TOKENIZER);
      const model = yield* LlamaModel.load({ source: { format: "llama2c", path: MODEL }, tp });
      const out: GeneratedToken[][] = [];
      for (const options of runs) {
        out.push(Chunk.toArray(yield* Stream.runCollect(generate(model, tokenizer, options))));
      }
      return out;
    }).pipe(Effect.scoped, Effect.provide(transport)),
  );

/** What a promise rejects with (fails the test when it resolves). */
const rejection = async (promise: Promise<unknown>): Promise<unknown> => {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
};

for (const [tp, transport] of [[1, InProcessTransport()], [2, WorkersTransport()]] as const) {
  Deno.test(`promise API tp ${tp}: the Effect generate()'s tokens and the greedy fixture`, async () => {
    const [greedy, sampled] = await effectGenerations(tp, transport, [
      { prompt: PROMPT, ...GREEDY, maxTokens: 48 },
      { prompt: PROMPT, ...SAMPLED, maxTokens: 48 },
    ]);
    const expected = await fixture();
    await using llm = await Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp });
    assert.equal(llm.tp, tp);
    assert.equal(llm.transport, tp === 1 ? "inprocess" : "workers");
    assert.deepEqual(await collect(llm.generate(PROMPT, GREEDY)), greedy);
    assert.deepEqual(await collect(llm.generate(PROMPT, SAMPLED)), sampled);
    const fromBos = await collect(llm.generate("", FROM_BOS));
    assert.deepEqual(fromBos.map((p) => p.token), expected.tokens);
    assert.equal(await llm.complete(PROMPT, GREEDY), greedy.map((p) => p.text).join(""));
  });
}

Deno.test("promise API: failures are thrown as their typed classes", async () => {
  const missing = await rejection(Tessera.load({ model: "/no/such/model.bin" }));
  assert.ok(missing instanceof LoadError, `got ${missing}`);
  assert.equal(missing.file, "/no/such/model.bin");

  const noTokenizer = await rejection(
    Tessera.load({ model: MODEL, tokenizer: "/no/such/tok.bin" }),
  );
  assert.ok(noTokenizer instanceof LoadError, `got ${noTokenizer}`);
  assert.equal(noTokenizer.file, "/no/such/tok.bin");

  for (const tp of [0, -1, 1.5, NaN]) {
    const bad = await rejection(Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp }));
    assert.ok(bad instanceof ConfigError, `tp ${tp}: got ${bad}`);
    assert.match(bad.message, /tp must be a positive integer/);
  }
  // stories260K has 8 heads: 3 ranks cannot split them.
  const undivided = await rejection(Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp: 3 }));
  assert.ok(undivided instanceof PlanError, `got ${undivided}`);
  assert.match(undivided.message, /tp = 3 does not divide n_heads = 8/);

  const options = [
    { transport: "carrier-pigeon" },
    { weights: "f8" },
    { logLevel: "loud" },
    { tp: 2, transport: { kind: "tcp", ranks: ["127.0.0.1:7001"], secretFile: "tp.secret" } },
    { tp: 1, transport: { kind: "tcp", ranks: ["127.0.0.1:7001"] } },
  ];
  for (const extra of options) {
    const bad = await rejection(
      Tessera.load({ model: MODEL, tokenizer: TOKENIZER, ...extra } as never),
    );
    assert.ok(bad instanceof ConfigError, `${JSON.stringify(extra)}: got ${bad}`);
  }
});

Deno.test("promise API: break and abort end a generation; the next one is unaffected", async () => {
  const expected = (await fixture()).tokens;
  await using llm = await Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp: 2 });
  const first: number[] = [];
  for await (const piece of llm.generate("", FROM_BOS)) {
    first.push(piece.token);
    if (first.length === 5) break;
  }
  assert.deepEqual(first, expected.slice(0, 5));
  assert.deepEqual((await collect(llm.generate("", FROM_BOS))).map((p) => p.token), expected);

  const controller = new AbortController();
  const reason = new Error("enough");
  const aborted: number[] = [];
  const error = await rejection((async () => {
    for await (const piece of llm.generate("", { ...FROM_BOS, signal: controller.signal })) {
      aborted.push(piece.token);
      if (aborted.length === 3) controller.abort(reason);
    }
  })());
  assert.equal(error, reason);
  assert.deepEqual(aborted, expected.slice(0, 3));

  // An already aborted signal: nothing starts.
  const early = await rejection(llm.complete("", { signal: AbortSignal.abort(reason) }));
  assert.equal(early, reason);

  // A generation waiting for its turn is abandoned by its signal; the one running goes on.
  const running = llm.generate("", FROM_BOS);
  const head = await running.next();
  const waiting = new AbortController();
  const queued = llm.complete("", { signal: waiting.signal });
  waiting.abort(reason);
  assert.equal(await rejection(queued), reason);
  assert.equal(head.value?.token, expected[0]);
  assert.equal((await running.next()).value?.token, expected[1]);
  await running.return();

  assert.deepEqual((await collect(llm.generate("", FROM_BOS))).map((p) => p.token), expected);
});

Deno.test("promise API: concurrent generations are serialized, each as if alone", async () => {
  await using llm = await Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp: 1 });
  const prompts = ["Once upon a time", "Lily and Ben", "The cat"];
  const alone: string[] = [];
  for (const prompt of prompts) alone.push(await llm.complete(prompt, GREEDY));
  assert.equal(new Set(alone).size, prompts.length);
  const together = await Promise.all(prompts.map((prompt) => llm.complete(prompt, GREEDY)));
  assert.deepEqual(together, alone);
  // Options that cannot work fail that call only, typed.
  for (const options of [{ maxTokens: 0 }, { temperature: -1 }, { topP: NaN }]) {
    const bad = await rejection(llm.complete(PROMPT, options));
    assert.ok(bad instanceof GenerateInputError, `${JSON.stringify(options)}: got ${bad}`);
  }
  assert.equal(await llm.complete(prompts[0], GREEDY), alone[0]);
});

/** Pids of this process's children, from /proc. */
const childPids = async (): Promise<number[]> => {
  const children: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`).catch(() => "");
    // Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === Deno.pid) children.push(Number(entry.name));
  }
  return children;
};

Deno.test("promise API: close() and an aborted load stop every rank; close is idempotent; later calls throw ModelClosed", async () => {
  const before = await childPids();
  const llm = await Tessera.load({ model: MODEL, tokenizer: TOKENIZER, tp: 2, transport: "tcp" });
  const ranks = (await childPids()).filter((pid) => !before.includes(pid));
  assert.equal(ranks.length, 2, `rank processes: ${ranks}`);
  const open = llm.generate("", FROM_BOS);
  assert.equal(typeof (await open.next()).value?.token, "number");
  await Promise.all([llm.close(), llm.close()]);
  await llm.close();
  const left = (await childPids()).filter((pid) => ranks.includes(pid));
  assert.deepEqual(left, [], "rank processes still running after close()");
  assert.ok(await rejection(open.next()) instanceof ModelClosed);
  assert.ok(await rejection(llm.complete(PROMPT)) instanceof ModelClosed);
  assert.ok(await rejection(collect(llm.generate(PROMPT))) instanceof ModelClosed);

  // A load aborted midway (the rank processes take far longer than 50 ms to start) rejects
  // with the signal's reason and leaves no rank running.
  const controller = new AbortController();
  const reason = new Error("not now");
  const loading = Tessera.load({
    model: MODEL,
    tokenizer: TOKENIZER,
    tp: 2,
    transport: "tcp",
    signal: controller.signal,
  });
  setTimeout(() => controller.abort(reason), 50);
  assert.equal(await rejection(loading), reason);
  assert.deepEqual((await childPids()).filter((pid) => !before.includes(pid)), []);

  let disposed: Tessera | undefined;
  {
    await using scoped = await Tessera.load({ model: MODEL, tokenizer: TOKENIZER });
    disposed = scoped;
  }
  assert.ok(await rejection(disposed.complete(PROMPT)) instanceof ModelClosed);
});
