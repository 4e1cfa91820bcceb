/**
 * The rank program of a decoder model (`LoadModel`, `Embed`, `DecoderLayer`, `LmHead`): on load
 * a rank opens the source, plans its shards, reads only its byte ranges and uploads them; then
 * it runs the steps the supervisor sends, one layer (two all-reduces) at a time.
 */
import { Effect } from "effect";
import { stepCommunicator } from "../collectives/communicator.ts";
import { toPayload } from "../collectives/protocol.ts";
import { tensor } from "../collectives/tensor.ts";
import { InvalidInput } from "../actors/errors.ts";
import type { RankCommand } from "../actors/protocol.ts";
import type { RankProgramFactory } from "../actors/rank_program.ts";
import { RankLlama } from "./llama_rank.ts";
import { planLlama } from "./plan.ts";
import { type CandidateList, shardCandidates } from "./sampler.ts";
import { plannedShardBytes } from "./shards.ts";
import { openModelSource } from "./source.ts";
import { describeKernelPaths } from "../kernels/paths.ts";

const concatFloats = (parts: readonly Float32Array[]) => {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};

const concatInts = (parts: readonly Int32Array[]) => {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};

export const decoderModelProgram: RankProgramFactory = (
  { rank, tp, gpu, group, timeline, emit },
) => {
  let model: RankLlama | undefined;
  const loadedModel = Effect.suspend(() =>
    model ? Effect.succeed(model) : Effect.fail(new InvalidInput({ message: "no model loaded" }))
  );
  const execute = (command: RankCommand) =>
    Effect.gen(function* () {
      switch (command._tag) {
        case "LoadModel": {
          const started = performance.now();
          const loaded = yield* Effect.scoped(Effect.gen(function* () {
            const opened = yield* openModelSource(command.source);
            const source = opened.source;
            // The memory plan's context: the KV cache and positions stop there.
            const config = command.contextLength === undefined
              ? opened.config
              : { ...opened.config, seqLen: Math.min(command.contextLength, opened.config.seqLen) };
            const plans = yield* planLlama(config, tp);
            const bytesPlanned = plannedShardBytes(config, plans[rank]);
            emit({ _tag: "LoadProgress", rank, ranks: tp, bytesRead: 0, bytesPlanned });
            return yield* RankLlama.load(gpu, config, plans[rank], source, {
              maxTokens: command.maxBatchTokens,
              maxSequences: command.maxSequences,
              weights: command.weights,
              kvCacheDtype: command.kvCacheDtype,
              timeline,
              onRead: (bytesRead) =>
                emit({ _tag: "LoadProgress", rank, ranks: tp, bytesRead, bytesPlanned }),
            });
          }));
          model?.release();
          model = loaded;
          yield* Effect.logDebug("model loaded").pipe(Effect.annotateLogs({
            weightMB: +(loaded.weightBytes / 1e6).toFixed(1),
            kvCacheMB: +(loaded.kvCacheBytes / 1e6).toFixed(1),
            weights: command.weights,
            seconds: +((performance.now() - started) / 1000).toFixed(2),
          }));
          return {
            _tag: "ModelLoaded",
            rank,
            bytes: loaded.weightBytes,
            kvCacheBytes: loaded.kvCacheBytes,
            device: describeKernelPaths(gpu),
          } as const;
        }
        case "Embed": {
          const m = yield* loadedModel;
          const comm = stepCommunicator(group, rank, command.step);
          yield* m.embed(
            comm,
            command.tokens,
            command.tokens.map((_, r) => ({
              sequence: command.sequences[r],
              position: command.positions[r],
            })),
          );
          return { _tag: "Done", rank, collectiveMillis: comm.collectiveMillis } as const;
        }
        case "DecoderLayer": {
          const m = yield* loadedModel;
          const comm = stepCommunicator(group, rank, command.step);
          yield* m.layer(comm, command.layer);
          return { _tag: "Done", rank, collectiveMillis: comm.collectiveMillis } as const;
        }
        case "LmHead": {
          const m = yield* loadedModel;
          const result = yield* m.head(command.rows, command.topK, command.temperature);
          const vocabStart = m.plan.vocab.start;
          const B = result.rows;
          if (command.topK === 0 && result.logits) {
            const output = tensor([B, result.logits.length / B], result.logits);
            return { _tag: "Output", rank, output: toPayload(output) } as const;
          }
          const { logits } = result;
          const lists: readonly CandidateList[] = logits
            ? Array.from({ length: B }, (_, r) => {
              const width = logits.length / B;
              const slice = logits.subarray(r * width, (r + 1) * width);
              return shardCandidates(slice, command.topK, vocabStart, command.temperature);
            })
            : [result];
          const values = concatFloats(lists.map((l) => l.values));
          const indices = concatInts(lists.map((l) => l.indices));
          return {
            _tag: "Candidates",
            rank,
            rows: B,
            values: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
            indices: new Uint8Array(indices.buffer, indices.byteOffset, indices.byteLength),
            logSumExp: logits ? lists.map((l) => l.logSumExp ?? 0) : undefined,
            vocabStart,
          } as const;
        }
        default:
          return yield* new InvalidInput({ message: `${command._tag} is not a model command` });
      }
    });
  return {
    commands: new Set(["LoadModel", "Embed", "DecoderLayer", "LmHead"] as const),
    execute,
    release: () => {
      model?.release();
      model = undefined;
    },
  };
};
