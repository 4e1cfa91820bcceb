/**
 * What a rank does with each command, independent of how commands reach it. A rank owns its
 * device, its shards and its buffers; it executes, it never decides. It answers the group's own
 * commands (ping, pause, collective timing) and hands every other command to the rank program
 * that owns it (actors/rank_program.ts): the runtime knows no layer and no model.
 */
import { Duration, Effect } from "effect";
import type { CollectiveGroup } from "../collectives/communicator.ts";
import { stepCommunicator } from "../collectives/communicator.ts";
import { tensor } from "../collectives/tensor.ts";
import type { Gpu } from "../gpu/device.ts";
import { InvalidInput } from "./errors.ts";
import { logAsRank } from "../observe/logging.ts";
import type { RankEvent } from "../observe/rank_events.ts";
import { noTimeline, recordingTimeline, withSpan } from "../observe/timeline.ts";
import type { RankCommand, RankReply } from "./protocol.ts";
import type { RankProgram, RankProgramFactory } from "./rank_program.ts";

export interface RankRuntime {
  readonly rank: number;
  readonly gpu: Gpu;
  /** Executes a command; any failure becomes a `Failed` reply naming this rank. */
  handle(command: RankCommand): Effect.Effect<RankReply>;
  /** Frees every layer's device memory (the device itself belongs to the caller's scope). */
  release(): void;
}

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
  programs: readonly RankProgramFactory[],
  reporting: RankReporting = silentReporting,
): RankRuntime => {
  const timeline = reporting.tracing ? recordingTimeline() : undefined;
  const context = { rank, tp, gpu, group, timeline: timeline ?? noTimeline, emit: reporting.emit };
  const running = programs.map((make) => make(context));
  const programFor = new Map<string, RankProgram>();
  for (const program of running) {
    for (const tag of program.commands) {
      if (programFor.has(tag)) throw new Error(`two rank programs run ${tag}`);
      programFor.set(tag, program);
    }
  }

  const pong = {
    _tag: "Pong",
    rank,
    backend: gpu.backend,
    adapter: gpu.adapterName,
    cpuRenderer: gpu.cpuRenderer,
    shaderF16: gpu.features.shaderF16,
    maxBindingBytes: gpu.limits.maxStorageBufferBindingSize,
  } as const;
  const execute = (command: RankCommand) =>
    Effect.gen(function* () {
      switch (command._tag) {
        case "Ping":
          return pong;
        case "Pause":
          yield* Effect.sleep(Duration.millis(command.millis));
          return pong;
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
        default: {
          const program = programFor.get(command._tag);
          if (!program) {
            return yield* new InvalidInput({ message: `no rank program runs ${command._tag}` });
          }
          return yield* program.execute(command);
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
      for (const program of running) program.release();
    },
  };
};
