/**
 * `deno task bench:service`: what continuous batching buys. The engine (engine/scheduler.ts)
 * serves N concurrent greedy requests on stories260K over 2 Worker ranks, for N = 1, 2, 4, 8;
 * the table has aggregate and per-request tokens/s, the time to first token and the mean decode
 * batch. Writes its section of docs/BENCHMARKS.md and docs/benchmarks/service.json.
 * `deno task bench:service soak` runs the long soak of bench/service_soak.ts instead.
 */
import { Chunk, Effect, Layer, Stream } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { machine, writeSection } from "./report.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import { runSoak } from "./service_soak.ts";
import { helpText, parseFlagTable, versionText } from "../cli/flag_table.ts";
import { positiveInt, usage } from "../cli/flags.ts";
import { runMain } from "../cli/main.ts";

const MODEL = STORIES260K_PATH;
const TOKENIZER = TOK512_PATH;
const TP = 2;
const TOKENS = 96;
const CONCURRENCY = [1, 2, 4, 8];
const PROMPTS = ["Once upon a time", "The cat", "Lily wanted", "One day, a big dog"];

interface Row {
  readonly concurrency: number;
  readonly tokens: number;
  readonly seconds: number;
  readonly aggregateTokPerS: number;
  readonly perRequestTokPerS: number;
  readonly ttftMillisP50: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const program = Effect.gen(function* () {
  const engine = yield* makeInferenceEngine({
    modelPath: MODEL,
    tokenizerPath: TOKENIZER,
    tp: TP,
    maxSequences: 8,
  });
  const { adapter } = (yield* engine.health).ranks[0];
  const request = (i: number) => ({
    promptTokens: engine.tokenizer.encode(PROMPTS[i % PROMPTS.length], { bos: true, eos: false }),
    maxTokens: TOKENS,
    temperature: 0,
    topP: 1,
    stopAtEos: false,
  });
  const one = (i: number) =>
    Effect.gen(function* () {
      const started = performance.now();
      let firstAt = 0;
      const stream = yield* engine.submit(request(i));
      const pieces = yield* Stream.runCollect(stream.pipe(Stream.tap(() =>
        Effect.sync(() => {
          firstAt ||= performance.now();
        })
      )));
      return {
        tokens: Chunk.size(pieces),
        ttft: firstAt - started,
        seconds: (performance.now() - started) / 1000,
      };
    });
  yield* one(0); // warm-up: pipelines for every step shape
  const rows: Row[] = [];
  for (const n of CONCURRENCY) {
    const started = performance.now();
    const results = yield* Effect.forEach(
      Array.from({ length: n }, (_, i) => i),
      one,
      { concurrency: "unbounded" },
    );
    const seconds = (performance.now() - started) / 1000;
    const tokens = results.reduce((sum, r) => sum + r.tokens, 0);
    rows.push({
      concurrency: n,
      tokens,
      seconds,
      aggregateTokPerS: tokens / seconds,
      perRequestTokPerS: median(results.map((r) => r.tokens / r.seconds)),
      ttftMillisP50: median(results.map((r) => r.ttft)),
    });
    console.error(`${n} concurrent: ${(tokens / seconds).toFixed(1)} tok/s aggregate`);
  }
  const base = rows[0].aggregateTokPerS;
  const table = [
    "| concurrent requests | tokens | aggregate tok/s | × one request | per-request tok/s | TTFT p50 (ms) |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((r) =>
      `| ${r.concurrency} | ${r.tokens} | ${r.aggregateTokPerS.toFixed(1)} | ` +
      `${(r.aggregateTokPerS / base).toFixed(2)} | ${r.perRequestTokPerS.toFixed(1)} | ` +
      `${r.ttftMillisP50.toFixed(0)} |`
    ),
  ].join("\n");
  const markdown = `## Continuous batching (\`deno task bench:service\`)

${machine(adapter)}. stories260K, tp ${TP} over Workers, greedy, ${TOKENS} tokens per request,
all requests submitted at once; the engine decodes every running request in one step.

${table}
`;
  yield* Effect.promise(() => writeSection("service", markdown, { tp: TP, rows }));
  console.log(markdown);
});

const FLAGS = {
  minutes: { type: "string", value: "M", default: "10", help: "soak: how long to run" },
  streams: { type: "string", value: "N", default: "4", help: "soak: concurrent clients" },
} as const;

const HELP = helpText(
  "deno task bench:service [soak]",
  "Measures continuous batching at 1, 2, 4 and 8 concurrent requests; `soak` keeps " +
    "--streams clients busy for --minutes instead. Both write docs/BENCHMARKS.md.",
  FLAGS,
);

const soak = Deno.args[0] === "soak";
const cli = Effect.gen(function* () {
  const parsed = yield* parseFlagTable(soak ? Deno.args.slice(1) : Deno.args, FLAGS);
  if (parsed._tag === "Help") return yield* Effect.sync(() => console.log(HELP.trimEnd()));
  if (parsed._tag === "Version") {
    return yield* Effect.sync(() => console.log(versionText().trimEnd()));
  }
  const minutes = Number(parsed.values.minutes);
  if (!(minutes > 0)) {
    return yield* usage(`--minutes must be a number > 0, got ${parsed.values.minutes}`);
  }
  const streams = yield* positiveInt("streams", parsed.values.streams);
  if (soak) return yield* Effect.promise(() => runSoak({ minutes, streams }));
  if (Deno.args.length > 0) {
    return yield* usage("--minutes and --streams go with `soak`");
  }
  yield* program.pipe(Effect.scoped, Effect.provide(Layer.fresh(WorkersTransport())));
});
await runMain(cli);
