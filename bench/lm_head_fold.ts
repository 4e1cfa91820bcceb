/**
 * What folding the LM head into a decode step's pipeline saves: greedy decode of stories260K at
 * tp 2 over Workers, alternating rounds of "step, then head" (two round trips to the ranks per
 * token) and `forwardWithCandidates` (one), 180 timed tokens a round after 20 of warm-up. Both
 * must produce the same tokens.
 *
 *   deno task bench:lm-head [model.bin] [rounds]
 */
import { Effect } from "effect";
import { STORIES260K_PATH } from "../assets/paths.ts";
import { LlamaModel } from "../models/llama.ts";
import { WorkersTransport } from "../ranks/transports.ts";

const path = Deno.args[0] ?? STORIES260K_PATH;
const rounds = Number(Deno.args[1] ?? 6);
const TOKENS = 200, WARMUP = 20;

const program = Effect.gen(function* () {
  const model = yield* LlamaModel.load({ source: { format: "llama2c", path }, tp: 2 });
  const decode = (folded: boolean) =>
    Effect.gen(function* () {
      let token = 1;
      const tokens: number[] = [], ms: number[] = [];
      for (let pos = 0; pos < TOKENS; pos++) {
        const started = performance.now();
        if (folded) {
          token = (yield* model.forwardWithCandidates([token], pos, 0, 1, 0)).indices[0];
        } else {
          yield* model.forward([token], pos);
          token = (yield* model.candidates(1, 0)).indices[0];
        }
        tokens.push(token);
        if (pos >= WARMUP) ms.push(performance.now() - started);
      }
      ms.sort((a, b) => a - b);
      return { median: ms[ms.length >> 1], tokens: tokens.join(",") };
    });
  console.log("| round | two round trips: median ms/token | one round trip: median ms/token |");
  console.log("| ----: | -------------------------------: | ------------------------------: |");
  for (let round = 1; round <= rounds; round++) {
    const two = yield* decode(false), one = yield* decode(true);
    if (two.tokens !== one.tokens) throw new Error("folded decode produced other tokens");
    console.log(`| ${round} | ${two.median.toFixed(2)} | ${one.median.toFixed(2)} |`);
  }
}).pipe(Effect.scoped, Effect.provide(WorkersTransport()));

await Effect.runPromise(program);
