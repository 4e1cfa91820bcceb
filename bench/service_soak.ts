/**
 * `deno task bench:service soak [--minutes 10] [--streams 4]`: the service's engine kept busy for
 * a long time, as an operator's soak would. `streams` clients each submit one sampled request
 * after another on stories260K over 2 Worker ranks; every token's arrival is timed. The table
 * has, per minute, tokens, the p50/p99 gap between a stream's tokens, the longest gap (a stall)
 * and the process's RSS (Workers included: they share the process). Writes its section of
 * docs/BENCHMARKS.md and docs/benchmarks/service-soak.json.
 *
 * Targets: no gap over 2 s, and RSS after the first minute within 20% of its first-minute level.
 */
import { Effect, Fiber, Layer, Stream } from "effect";
import { WorkersTransport } from "../ranks/transports.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import { machine, writeSection } from "./report.ts";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";

const TP = 2;
const TOKENS_PER_REQUEST = 200;
const PROMPTS = ["Once upon a time", "The cat", "Lily wanted", "One day, a big dog"];
const STALL_TARGET_MS = 2000;
const RSS_TARGET = 0.2;

interface Minute {
  readonly minute: number;
  readonly tokens: number;
  readonly requests: number;
  readonly gapP50Ms: number;
  readonly gapP99Ms: number;
  readonly longestGapMs: number;
  readonly rssMB: number;
  readonly restarts: number;
}

/** The largest of `xs` (0 if empty); a spread of a run's 150k gaps would overflow the stack. */
const largest = (xs: readonly number[]) => xs.reduce((a, b) => Math.max(a, b), 0);

const quantile = (xs: readonly number[], q: number) => {
  if (xs.length === 0) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
};

/** Runs the soak: `streams` clients for `minutes`. */
export const runSoak = async (
  { minutes, streams }: { readonly minutes: number; readonly streams: number },
): Promise<void> => {
  const program = Effect.gen(function* () {
    const engine = yield* makeInferenceEngine({
      modelPath: STORIES260K_PATH,
      tokenizerPath: TOK512_PATH,
      tp: TP,
      maxSequences: Math.max(8, streams),
    });
    const { adapter } = (yield* engine.health).ranks[0];
    const started = performance.now();
    const endAt = started + minutes * 60_000;
    // Per minute: gaps between consecutive tokens of one request, tokens, requests finished.
    const gaps: number[][] = [];
    const tokens: number[] = [];
    const requests: number[] = [];
    const minuteOf = (t: number) => Math.floor((t - started) / 60_000);
    const bump = (xs: number[], m: number) => (xs[m] = (xs[m] ?? 0) + 1);

    const client = (index: number) =>
      Effect.gen(function* () {
        let n = index;
        while (performance.now() < endAt) {
          const pieces = yield* engine.submit({
            promptTokens: engine.tokenizer.encode(PROMPTS[n++ % PROMPTS.length], {
              bos: true,
              eos: false,
            }),
            maxTokens: TOKENS_PER_REQUEST,
            temperature: 0.8,
            topP: 0.95,
            seed: n,
            stopAtEos: false,
          });
          let last = 0;
          yield* Stream.runForEach(pieces, () =>
            Effect.sync(() => {
              const now = performance.now();
              const m = minuteOf(now);
              if (last > 0) (gaps[m] ??= []).push(now - last);
              bump(tokens, m);
              last = now;
            }));
          bump(requests, minuteOf(performance.now()));
        }
      });

    const rss: number[] = [];
    const restarts: number[] = [];
    const sampler = Effect.gen(function* () {
      for (let m = 0; m < Math.ceil(minutes); m++) {
        yield* Effect.sleep(Math.max(0, started + (m + 1) * 60_000 - performance.now()));
        rss[m] = Deno.memoryUsage().rss / 1e6;
        restarts[m] = (yield* engine.health).restarts;
        console.error(
          `minute ${m + 1}: ${tokens[m] ?? 0} tokens, longest gap ` +
            `${largest(gaps[m] ?? []).toFixed(0)} ms, RSS ${rss[m].toFixed(0)} MB`,
        );
      }
    });
    const sampling = yield* Effect.fork(sampler);
    yield* Effect.forEach(Array.from({ length: streams }, (_, i) => i), client, {
      concurrency: "unbounded",
      discard: true,
    });
    yield* Fiber.join(sampling);

    const rows: Minute[] = rss.map((r, m) => ({
      minute: m + 1,
      tokens: tokens[m] ?? 0,
      requests: requests[m] ?? 0,
      gapP50Ms: quantile(gaps[m] ?? [], 0.5),
      gapP99Ms: quantile(gaps[m] ?? [], 0.99),
      longestGapMs: largest(gaps[m] ?? []),
      rssMB: r,
      restarts: restarts[m],
    }));
    const all = gaps.flat();
    const longest = largest(all);
    const settled = rows.slice(1).map((r) => r.rssMB);
    const rssDrift = settled.length > 0
      ? largest(settled.map((r) => Math.abs(r - rows[0].rssMB))) / rows[0].rssMB
      : 0;
    const verdict = (ok: boolean) => (ok ? "met" : "**missed**");
    const table = [
      "| minute | tokens | requests | gap p50 (ms) | gap p99 (ms) | longest gap (ms) | RSS (MB) | restarts |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...rows.map((r) =>
        `| ${r.minute} | ${r.tokens} | ${r.requests} | ${r.gapP50Ms.toFixed(1)} | ` +
        `${r.gapP99Ms.toFixed(1)} | ${r.longestGapMs.toFixed(0)} | ${r.rssMB.toFixed(0)} | ` +
        `${r.restarts} |`
      ),
    ].join("\n");
    const markdown = `## Soak (\`deno task bench:service soak\`)

${machine(adapter)}. stories260K, tp ${TP} over Workers, ${streams} clients each submitting one
sampled request (${TOKENS_PER_REQUEST} tokens, temperature 0.8) after another for ${minutes}
minutes. A gap is the time between two tokens of one request.

${table}

Over the whole run: gap p50 ${quantile(all, 0.5).toFixed(1)} ms, p99 ${
      quantile(all, 0.99).toFixed(1)
    } ms, longest ${longest.toFixed(0)} ms (target ≤ ${STALL_TARGET_MS} ms: ${
      verdict(longest <= STALL_TARGET_MS)
    }); RSS after the first minute within ${
      (rssDrift * 100).toFixed(1)
    }% of the first minute's (target ≤ ${RSS_TARGET * 100}%: ${verdict(rssDrift <= RSS_TARGET)}).
`;
    yield* Effect.promise(() =>
      writeSection("service-soak", markdown, { tp: TP, streams, minutes, rows, longest, rssDrift })
    );
    console.log(markdown);
  });

  await Effect.runPromise(
    program.pipe(Effect.scoped, Effect.provide(Layer.fresh(WorkersTransport()))),
  );
};
