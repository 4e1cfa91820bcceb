/**
 * actors/ runs whatever rank programs it is given: a program of a test's own drives the same
 * transport, a command no program runs fails as a typed reply, and two programs cannot share a
 * command.
 */
import assert from "node:assert/strict";
import { Effect, Either } from "effect";
import { InProcessTransport } from "../actors/inprocess.ts";
import type { RankCommand } from "../actors/protocol.ts";
import type { RankProgramFactory } from "../actors/rank_program.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { fromPayload, toPayload } from "../collectives/protocol.ts";
import { stepCommunicator } from "../collectives/communicator.ts";
import { tensor } from "../collectives/tensor.ts";
import { standardRankPrograms } from "../ranks/programs.ts";

/** `Forward` sums every rank's input times (rank + 1) with an all-reduce; no layer, no model. */
const scaledSum: RankProgramFactory = ({ rank, group }) => ({
  commands: new Set(["Forward"] as const),
  execute: (command: RankCommand) =>
    Effect.gen(function* () {
      if (command._tag !== "Forward") throw new Error("not mine");
      const input = fromPayload(command.input);
      const scaled = tensor([...input.shape], input.data.map((x) => x * (rank + 1)));
      const sum = yield* stepCommunicator(group, rank, command.step).allReduce(scaled);
      return { _tag: "Output", rank, output: toPayload(sum) } as const;
    }),
  release: () => {},
});

const withPrograms = <A, E>(
  factories: readonly RankProgramFactory[],
  body: (s: Supervisor) => Effect.Effect<A, E>,
) =>
  Effect.runPromise(
    Effect.scoped(Effect.flatMap(Supervisor.make({ tp: 3 }), body)).pipe(
      Effect.provide(InProcessTransport(
        { factories, workerEntry: standardRankPrograms.workerEntry },
      )),
    ),
  );

Deno.test("rank programs: a program of its own runs on the transport, collectives included", async () => {
  const outputs = await withPrograms(
    [scaledSum],
    (s) => s.forward("unused", tensor([2], new Float32Array([1, 10]))),
  );
  // (1 + 2 + 3) × input on every rank
  for (const out of outputs) assert.deepEqual([...out.data], [6, 60]);
});

Deno.test("rank programs: a command no program runs fails typed, naming the command", async () => {
  const outcome = await withPrograms(
    [scaledSum],
    (s) =>
      Effect.either(s.step((_, step) => ({ _tag: "DecoderLayer", step, layer: 0 } as RankCommand))),
  );
  assert.ok(Either.isLeft(outcome));
  assert.equal(outcome.left._tag, "RankFailed");
  assert.match(outcome.left.message, /no rank program runs DecoderLayer/);
});

Deno.test("rank programs: two programs claiming one command are refused", async () => {
  await assert.rejects(
    withPrograms([scaledSum, scaledSum], (s) => s.ranks()),
    /two rank programs run Forward/,
  );
});
