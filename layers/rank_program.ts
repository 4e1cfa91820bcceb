/**
 * The rank program of stand-alone parallel layers (`LoadLayer`, `Forward`): a rank keeps the
 * layers it was given by name and runs one on the input it is sent, collectives included.
 */
import { Effect } from "effect";
import { stepCommunicator } from "../collectives/communicator.ts";
import { fromPayload, type TensorPayload, toPayload } from "../collectives/protocol.ts";
import type { HostTensor } from "../collectives/tensor.ts";
import { InvalidInput } from "../actors/errors.ts";
import type { RankCommand } from "../actors/protocol.ts";
import type { RankProgramFactory } from "../actors/rank_program.ts";
import { layerKind } from "./kinds.ts";
import type { RankLayer } from "./layer.ts";

/** A payload as a host tensor, or `InvalidInput` saying why it is not one. */
export const payloadTensor = (p: TensorPayload): Effect.Effect<HostTensor, InvalidInput> =>
  Effect.try({
    try: () => fromPayload(p),
    catch: (e) => new InvalidInput({ message: `bad tensor payload: ${(e as Error).message}` }),
  });

export const parallelLayerProgram: RankProgramFactory = ({ rank, tp, gpu, group }) => {
  const layers = new Map<string, RankLayer>();
  return {
    commands: new Set(["LoadLayer", "Forward"] as const),
    execute: (command: RankCommand) =>
      Effect.gen(function* () {
        switch (command._tag) {
          case "LoadLayer": {
            const shards = yield* Effect.forEach(command.shards, payloadTensor);
            const layer = yield* layerKind(command.spec).load(gpu, command.spec, rank, tp, shards);
            layers.get(command.spec.name)?.destroy();
            layers.set(command.spec.name, layer);
            const shardShapes = shards.map((s) => [...s.shape]);
            return { _tag: "Loaded", rank, bytes: layer.weightBytes, shardShapes } as const;
          }
          case "Forward": {
            const layer = layers.get(command.layer);
            if (!layer) {
              return yield* new InvalidInput({ message: `no layer named "${command.layer}"` });
            }
            const input = yield* payloadTensor(command.input);
            const comm = stepCommunicator(group, rank, command.step);
            const output = yield* layer.forward({ step: command.step, comm }, input);
            return { _tag: "Output", rank, output: toPayload(output) } as const;
          }
          default:
            return yield* new InvalidInput({ message: `${command._tag} is not a layer command` });
        }
      }),
    release: () => {
      for (const layer of layers.values()) layer.destroy();
      layers.clear();
    },
  };
};
