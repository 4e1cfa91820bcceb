/**
 * Where each row of a step belongs, shared by RoPE, the KV-cache write and attention: a u32
 * storage buffer of (sequence, position) pairs, one per row, that the caller rewrites with
 * `queue.writeBuffer` each step, so prepared dispatches never change. A prefill step is the rows
 * start..start+T-1 of one sequence; a batched decode step is one row per running sequence, each
 * at its own position in its own slot of the KV cache.
 */
import type { Gpu } from "../gpu/device.ts";
import { createStorageBuffer, writeBuffer } from "../gpu/buffers.ts";

/** One row's place: its sequence's KV-cache slot and its position in that sequence. */
export interface RowPosition {
  readonly sequence: number;
  readonly position: number;
}

/** `count` consecutive positions of one sequence from `start` (a prefill chunk). */
export const contiguousRows = (start: number, count: number, sequence = 0): RowPosition[] =>
  Array.from({ length: count }, (_, r) => ({ sequence, position: start + r }));

/** A positions buffer for up to `maxRows` rows, every row at sequence 0, position 0. */
export const createPositionBuffer = (gpu: Gpu, maxRows: number, label = "positions"): GPUBuffer =>
  createStorageBuffer(gpu, label, new Uint32Array(2 * maxRows));

/** Sets the rows' places for the next submitted step (queued, ordered before it). */
export const writePositions = (
  gpu: Gpu,
  buffer: GPUBuffer,
  rows: readonly RowPosition[],
): void => {
  const words = new Uint32Array(2 * rows.length);
  rows.forEach((row, r) => {
    words[2 * r] = row.sequence;
    words[2 * r + 1] = row.position;
  });
  writeBuffer(gpu, buffer, words);
};

/** WGSL: the sequence and position of row `row` in a `positions` binding. */
export const ROW_POSITION_WGSL = /* wgsl */ `
fn rowSequence(row: u32) -> u32 { return positions[2u * row]; }
fn rowPosition(row: u32) -> u32 { return positions[2u * row + 1u]; }
`;
