/**
 * The step position shared by RoPE, the KV-cache write and attention: a tiny u32 storage buffer
 * the caller rewrites with `queue.writeBuffer` each step, so prepared dispatches never change.
 * Word 0 is the position of row 0 of the step; row r of a step is at position + r (decode: one
 * row; prefill: T rows at start..start+T-1).
 */
import type { Gpu } from "../gpu/device.ts";
import { createStorageBuffer, writeBuffer } from "../gpu/buffers.ts";

/** A position buffer initialised to `start`. */
export const createPositionBuffer = (gpu: Gpu, label = "position", start = 0): GPUBuffer =>
  createStorageBuffer(gpu, label, Uint32Array.of(start));

/** Sets the position of row 0 for the next submitted step (queued, ordered before it). */
export const writePosition = (gpu: Gpu, buffer: GPUBuffer, start: number): void =>
  writeBuffer(gpu, buffer, Uint32Array.of(start));
