/**
 * The rank Worker pool's stop deadline: a rank that does not answer `Stop` in time has its
 * Worker terminated, and whatever ends the session later (the scope's close, which runs
 * uninterruptibly) returns at once instead of waiting for an answer that cannot come.
 */
import assert from "node:assert/strict";
import { Effect } from "effect";
import { makeRankWorkerPool } from "../actors/rank_worker_pool.ts";
import { standardRankPrograms } from "../ranks/programs.ts";

const BOUND_MILLIS = 20_000;

Deno.test("rank worker pool: a rank past its stop deadline is terminated and its session's close returns", async () => {
  const ended: string[] = [];
  const closing = Effect.runPromise(Effect.scoped(Effect.gen(function* () {
    // A zero deadline: no rank stops in time, as one stuck in a long dispatch would not.
    const pool = yield* makeRankWorkerPool({
      entry: standardRankPrograms.workerEntry,
      stopDeadline: 0,
    });
    const session = yield* pool.session({
      onMessage: (message) => ended.push(`message ${message._tag}`),
      onCrash: (why) => ended.push(`crash ${why}`),
    });
    // As a drill's kill does: end the session from a fiber of its own, then close the scope.
    yield* Effect.forkDaemon(session.end).pipe(Effect.flatMap((fiber) => fiber.await));
    ended.push("ended by the kill");
  }))).then(() => "closed");
  let bound: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    closing,
    new Promise<string>((resolve) => bound = setTimeout(() => resolve("hung"), BOUND_MILLIS)),
  ]);
  clearTimeout(bound);
  assert.equal(outcome, "closed", "the session's close waited for a terminated Worker");
  assert.deepEqual(ended, ["ended by the kill"], "a terminated rank's session hears nothing more");
});
