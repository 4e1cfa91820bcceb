/**
 * A decode token is one round trip to the ranks: the LM head rides in the step's pipeline (sent
 * before any layer's reply is awaited) and gives the candidates a separate head call gives.
 */
import assert from "node:assert/strict";
import { Effect, Layer } from "effect";
import { Transport } from "../actors/transport.ts";
import { STORIES260K_PATH } from "../assets/paths.ts";
import { LlamaModel } from "../models/llama.ts";
import { InProcessTransport } from "../ranks/transports.ts";

/** The in-process transport, recording rank 0's sends and replies in order. */
const recordingTransport = (events: string[]) =>
  Layer.effect(
    Transport,
    Effect.map(Transport, (inner) => ({
      name: inner.name,
      spawn: (tp: number) =>
        Effect.map(inner.spawn(tp), (group) => ({
          ...group,
          ranks: group.ranks.map((handle) => ({
            rank: handle.rank,
            send: (command: Parameters<typeof handle.send>[0]) =>
              Effect.map(handle.send(command), (wait) => {
                if (handle.rank === 0) events.push(`send ${command._tag}`);
                return Effect.tap(wait, () =>
                  Effect.sync(() => {
                    if (handle.rank === 0) events.push(`reply ${command._tag}`);
                  }));
              }),
          })),
        })),
    })),
  ).pipe(Layer.provide(InProcessTransport()));

Deno.test("lm head fold: one pipeline per decode token, the same candidates as a head call", async () => {
  const events: string[] = [];
  const { folded, separate, layers } = await Effect.runPromise(
    Effect.gen(function* () {
      const model = yield* LlamaModel.load({
        source: { format: "llama2c", path: STORIES260K_PATH },
        tp: 2,
      });
      yield* model.forward([1, 400, 25], 0);
      events.length = 0;
      const folded = yield* model.forwardWithCandidates([67], 3, 0, 8, 0.9);
      const foldedEvents = [...events];
      // The same token at the same position, the head asked for after the step.
      yield* model.forward([67], 3);
      const separate = yield* model.candidates(8, 0.9);
      events.splice(0, events.length, ...foldedEvents);
      return { folded, separate, layers: model.config.nLayers };
    }).pipe(Effect.scoped, Effect.provide(recordingTransport(events))),
  );

  const sends = events.filter((e) => e.startsWith("send"));
  assert.deepEqual(sends, [
    "send Embed",
    ...Array.from({ length: layers }, () => "send DecoderLayer"),
    "send LmHead",
  ]);
  // Every command, the head included, was sent before the first reply came back.
  assert.ok(events.indexOf("send LmHead") < events.indexOf("reply Embed"), events.join(", "));
  assert.deepEqual([...folded.indices], [...separate.indices]);
  assert.deepEqual([...folded.values], [...separate.values]);
  assert.equal(folded.logSumExp, separate.logSumExp);
});
