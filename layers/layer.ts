/**
 * What a parallel layer is: a sharding rule (run by the supervisor, beside the weights it
 * splits) and a rank-side forward over the rank's own shards.
 */
import { Effect } from "effect";
import type { CollectiveFailure, Communicator } from "../collectives/communicator.ts";
import { describe, type HostTensor } from "../collectives/tensor.ts";
import type { DeviceLostError, GpuOperationError } from "../gpu/errors.ts";
import type { Gpu } from "../gpu/device.ts";
import { InvalidInput, PlanError } from "../actors/errors.ts";
import type { LayerSpec } from "../actors/protocol.ts";

/** What a rank-side forward gets besides its input: the step and its communicator. */
export interface StepContext {
  /** The supervisor step being run. */
  readonly step: number;
  /** This rank's collectives for the step. */
  readonly comm: Communicator;
}

/** Why a rank-side forward failed. */
export type StepFailure = InvalidInput | CollectiveFailure | DeviceLostError | GpuOperationError;

/** A layer as it lives on one rank: its shards on the device and buffers per batch size. */
export interface RankLayer {
  /** Bytes of this rank's shards on the device. */
  readonly weightBytes: number;
  /** Runs the layer on this rank's part of a step. */
  forward(ctx: StepContext, input: HostTensor): Effect.Effect<HostTensor, StepFailure>;
  /** Frees the layer's buffers. */
  destroy(): void;
}

/** The two halves of a parallel layer kind. */
export interface ParallelLayerKind<S extends LayerSpec> {
  /** Rejects a plan that cannot work before any weight moves. */
  plan(spec: S, tp: number): Effect.Effect<void, PlanError>;
  /** The weight loader: rank r's shards of the full weights. */
  shard(spec: S, full: readonly HostTensor[], rank: number, tp: number): HostTensor[];
  /** Builds the rank-side layer from the rank's shards (validated against the plan). */
  load(
    gpu: Gpu,
    spec: S,
    rank: number,
    tp: number,
    shards: readonly HostTensor[],
  ): Effect.Effect<RankLayer, InvalidInput>;
}

/** Fails unless `actual` has exactly `expected` shape. */
export const expectShape = (what: string, actual: HostTensor, expected: readonly number[]) =>
  actual.shape.length === expected.length && actual.shape.every((d, i) => d === expected[i])
    ? Effect.void
    : Effect.fail(
      new InvalidInput({
        message: `${what}: expected f32[${expected.join("×")}], got ${describe(actual)}`,
      }),
    );

/** Fails unless a 2-D input has `columns` columns; returns its row count. */
export const expectRows = (what: string, input: HostTensor, columns: number) =>
  input.shape.length === 2 && input.shape[1] === columns && input.shape[0] > 0
    ? Effect.succeed(input.shape[0])
    : Effect.fail(
      new InvalidInput({
        message: `${what}: expected an input of f32[M×${columns}], got ${describe(input)}`,
      }),
    );

/** A split of `size` over tp ranks must give every rank at least one row or column. */
export const planSplit = (layer: string, dimension: string, size: number, tp: number) =>
  size >= tp ? Effect.void : Effect.fail(
    new PlanError({
      message: `${layer}: cannot split ${dimension} = ${size} over tp = ${tp} ranks`,
    }),
  );

/** Memoises per-batch-size buffers: allocated on the first step of a shape, then reused. */
export class PerBatch<T extends { destroy(): void }> {
  private readonly byRows = new Map<number, T>();
  constructor(private readonly build: (rows: number) => T) {}
  get(rows: number): T {
    let entry = this.byRows.get(rows);
    if (!entry) this.byRows.set(rows, entry = this.build(rows));
    return entry;
  }
  destroy(): void {
    for (const entry of this.byRows.values()) entry.destroy();
    this.byRows.clear();
  }
}
