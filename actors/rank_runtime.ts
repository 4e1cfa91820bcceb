/**
 * What a rank does with each command, independent of how commands reach it. A rank owns its
 * device, its shards and its buffers; it executes, it never decides.
 */
import { Duration, Effect } from "effect";
import type { CollectiveGroup } from "../collectives/communicator.ts";
import { stepCommunicator } from "../collectives/communicator.ts";
import { fromPayload, type TensorPayload, toPayload } from "../collectives/protocol.ts";
import { type HostTensor, tensor } from "../collectives/tensor.ts";
import type { Gpu } from "../gpu/device.ts";
import { layerKind } from "../layers/kinds.ts";
import type { RankLayer } from "../layers/layer.ts";
import { InvalidInput } from "./errors.ts";
import { RankLlama } from "../models/llama_rank.ts";
import { planLlama } from "../models/plan.ts";
import { type CandidateList, shardCandidates } from "../models/sampler.ts";
import { loadRankShards, plannedShardBytes } from "../models/shards.ts";
import { openModelSource } from "../models/source.ts";
import { logAsRank } from "../observe/logging.ts";
import type { RankEvent } from "../observe/rank_events.ts";
import { noTimeline, recordingTimeline, withSpan } from "../observe/timeline.ts";
import type { RankCommand, RankReply } from "./protocol.ts";

export interface RankRuntime {
  readonly rank: number;
  readonly gpu: Gpu;
  /** Executes a command; any failure becomes a `Failed` reply naming this rank. */
  handle(command: RankCommand): Effect.Effect<RankReply>;
  /** Frees every layer's device memory (the device itself belongs to the caller's scope). */
  release(): void;
}

const toHost = (p: TensorPayload): Effect.Effect<HostTensor, InvalidInput> =>
  Effect.try({
    try: () => fromPayload(p),
    catch: (e) => new InvalidInput({ message: `bad tensor payload: ${(e as Error).message}` }),
  });

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

/** How a rank reports on itself: load progress always, spans when tracing. */
export interface RankReporting {
  /** Record spans (kernel segments, transfers, waits, steps) and send them after each command. */
  readonly tracing: boolean;
  /** Delivers an event to the supervisor, ahead of the reply of the command in progress. */
  emit(event: RankEvent): void;
}

/** Reports nothing. */
export const silentReporting: RankReporting = { tracing: false, emit: () => {} };

/** The span name of a command: its tag, and the layer for a decoder layer. */
const stepName = (command: RankCommand) =>
  command._tag === "DecoderLayer" ? `layer ${command.layer}` : command._tag;

export const makeRankRuntime = (
  rank: number,
  tp: number,
  gpu: Gpu,
  group: CollectiveGroup,
  reporting: RankReporting = silentReporting,
): RankRuntime => {
  const timeline = reporting.tracing ? recordingTimeline() : undefined;
  const layers = new Map<string, RankLayer>();
  let model: RankLlama | undefined;
  const loadedModel = Effect.suspend(() =>
    model ? Effect.succeed(model) : Effect.fail(new InvalidInput({ message: "no model loaded" }))
  );

  const execute = (command: RankCommand) =>
    Effect.gen(function* () {
      switch (command._tag) {
        case "Ping":
          return { _tag: "Pong", rank, backend: gpu.backend, adapter: gpu.adapterName } as const;
        case "Pause":
          yield* Effect.sleep(Duration.millis(command.millis));
          return { _tag: "Pong", rank, backend: gpu.backend, adapter: gpu.adapterName } as const;
        case "TimeCollective": {
          const comm = stepCommunicator(group, rank, command.step);
          const data = tensor([command.bytes / 4 | 0], new Float32Array(command.bytes / 4 | 0));
          const millis: number[] = [];
          for (let i = 0; i < command.iterations; i++) {
            const started = performance.now();
            yield* command.op === "allReduce" ? comm.allReduce(data) : comm.allGather(data, 0);
            millis.push(performance.now() - started);
          }
          return { _tag: "Timings", rank, millis } as const;
        }
        case "LoadLayer": {
          const shards = yield* Effect.forEach(command.shards, toHost);
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
          const input = yield* toHost(command.input);
          const comm = stepCommunicator(group, rank, command.step);
          const output = yield* layer.forward({ step: command.step, comm }, input);
          return { _tag: "Output", rank, output: toPayload(output) } as const;
        }
        case "LoadModel": {
          const started = performance.now();
          const loaded = yield* Effect.scoped(Effect.gen(function* () {
            const { config, source } = yield* openModelSource(command.source);
            const plans = yield* planLlama(config, tp);
            const bytesPlanned = plannedShardBytes(config, plans[rank]);
            reporting.emit({ _tag: "LoadProgress", rank, ranks: tp, bytesRead: 0, bytesPlanned });
            const shards = yield* loadRankShards(
              source,
              config,
              plans[rank],
              (bytesRead) =>
                reporting.emit({ _tag: "LoadProgress", rank, ranks: tp, bytesRead, bytesPlanned }),
            );
            return yield* RankLlama.create(
              gpu,
              config,
              plans[rank],
              shards,
              command.maxBatchTokens,
              command.maxSequences,
              command.weights,
              timeline ?? noTimeline,
            );
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
      }
    });

  return {
    rank,
    gpu,
    handle: Effect.fn("Rank.handle")(function* (command: RankCommand) {
      yield* Effect.annotateCurrentSpan({ rank, command: command._tag, step: command.step });
      const reply = yield* withSpan(
        timeline ?? noTimeline,
        stepName(command),
        "step",
        execute(command),
        { step: command.step },
      ).pipe(
        Effect.catchAll((error) =>
          Effect.logWarning(`${command._tag} failed: ${error.message}`).pipe(
            Effect.as<RankReply>({
              _tag: "Failed",
              rank,
              step: command.step,
              reason: error._tag,
              message: error.message,
            }),
          )
        ),
        logAsRank(rank),
      );
      const spans = timeline?.drain();
      if (spans && spans.length > 0) reporting.emit({ _tag: "RankSpans", rank, spans });
      return reply;
    }),
    release: () => {
      model?.release();
      model = undefined;
      for (const layer of layers.values()) layer.destroy();
      layers.clear();
    },
  };
};
