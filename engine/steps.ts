/**
 * The two steps every decode loop is made of: the prefill of a sequence's prompt (with the LM
 * head in the same pipeline, so its first token is one round trip), and one decode step with a
 * row per running sequence. The engine's scheduler runs them over a batch; `generate()` runs them
 * over one sequence. What differs between the two is only what happens around a step, in
 * {@link StepHooks}.
 */
import { Effect } from "effect";
import type { StepFailure } from "../actors/errors.ts";
import type { LlamaModel } from "../models/llama.ts";
import { CANDIDATES_PER_RANK, type NonFiniteLogits } from "../models/sampler.ts";
import type { Sequence } from "./sequence.ts";

/** What a loop does around the steps; `F` is how it fails besides a step failure. */
export interface StepHooks<F> {
  /**
   * A sequence's logits were not finite: the engine ends that request alone (and returns a
   * token `accept` ignores), `generate()` fails its stream.
   */
  readonly nonFinite: (sequence: Sequence, error: NonFiniteLogits) => Effect.Effect<number, F>;
  /** A fresh sequence's prompt is in its cache and its first token was chosen. */
  readonly prefilled?: (sequence: Sequence) => Effect.Effect<void>;
  /** A token was chosen for a sequence (before it is accepted). */
  readonly chosen?: (sequence: Sequence) => Effect.Effect<void>;
  /** A decode step ran with this many rows. */
  readonly decoded?: (rows: number) => Effect.Effect<void>;
}

/** Candidates per rank a sequence's head asks for: the top one when greedy. */
const candidatesFor = (temperature: number) => temperature > 0 ? CANDIDATES_PER_RANK : 1;

const choose = <F>(
  sequence: Sequence,
  hooks: StepHooks<F>,
  candidates: Parameters<Sequence["choose"]>[0],
  fullLogits: Effect.Effect<Float32Array, StepFailure>,
) =>
  sequence.choose(candidates, fullLogits).pipe(
    Effect.catchTag("NonFiniteLogits", (error) => hooks.nonFinite(sequence, error)),
  );

/**
 * Puts a sequence's tokens in its slot. A fresh one then chooses and accepts its first token; a
 * resumed one (its group restarted) re-prefills prompt and tokens so far, and its last
 * generated token is fed by the next decode step (a row's bits do not depend on its step).
 */
export const prefillSequence = <F>(
  model: LlamaModel,
  sequence: Sequence,
  hooks: StepHooks<F>,
): Effect.Effect<void, StepFailure | F> =>
  Effect.gen(function* () {
    if (sequence.generated.length > 0) {
      yield* model.forward(sequence.tokensSoFar, 0, sequence.slot);
      sequence.prefilled = true;
      return;
    }
    const candidates = yield* model.forwardWithCandidates(
      sequence.request.promptTokens,
      0,
      sequence.slot,
      candidatesFor(sequence.temperature),
      sequence.temperature,
    );
    sequence.prefilled = true;
    const token = yield* choose(
      sequence,
      hooks,
      candidates,
      Effect.suspend(() => model.logits()),
    );
    if (hooks.prefilled) yield* hooks.prefilled(sequence);
    if (hooks.chosen) yield* hooks.chosen(sequence);
    yield* sequence.accept(token);
  });

/**
 * One decode step: a row per sequence, each at its own position in its own slot, the LM head in
 * the same pipeline (one head per temperature: greedy rows need only the top candidate); then
 * each sequence chooses and accepts its token.
 */
export const decodeBatch = <F>(
  model: LlamaModel,
  batch: readonly Sequence[],
  hooks: StepHooks<F>,
): Effect.Effect<void, StepFailure | F> =>
  Effect.gen(function* () {
    const byTemperature = new Map<number, number[]>();
    batch.forEach((s, row) => {
      const rows = byTemperature.get(s.temperature);
      if (rows) rows.push(row);
      else byTemperature.set(s.temperature, [row]);
    });
    const heads = [...byTemperature].map(([temperature, rows]) => ({
      rows,
      k: candidatesFor(temperature),
      temperature,
    }));
    const listsPerHead = yield* model.stepWithHeads(
      batch.map((s) => ({
        token: s.generated[s.generated.length - 1],
        sequence: s.slot,
        position: s.nextPosition,
      })),
      heads,
    );
    if (hooks.decoded) yield* hooks.decoded(batch.length);
    for (const [h, { rows }] of heads.entries()) {
      const lists = listsPerHead[h];
      for (const [i, row] of rows.entries()) {
        const sequence = batch[row];
        const fullLogits = Effect.suspend(() => Effect.map(model.logitsFor([row]), (l) => l[0]));
        const token = yield* choose(sequence, hooks, lists[i], fullLogits);
        if (hooks.chosen) yield* hooks.chosen(sequence);
        yield* sequence.accept(token);
      }
    }
  });
