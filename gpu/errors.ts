import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";

/** No WebGPU adapter could be found by any backend. */
export interface NoAdapterError extends Cause.YieldableError {
  /** Always `"NoAdapterError"`. */
  readonly _tag: "NoAdapterError";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `NoAdapterError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const NoAdapterError: TaggedErrorClass<NoAdapterError> = Data.TaggedError("NoAdapterError")<
  ErrorFields<NoAdapterError>
>;

/** The device was lost (driver reset, destroyed, out of memory) while in use. */
export interface DeviceLostError extends Cause.YieldableError {
  /** Always `"DeviceLostError"`. */
  readonly _tag: "DeviceLostError";
  /** Human-readable description. */
  readonly message: string;
  /** The reason WebGPU gave for the loss. */
  readonly reason: string;
}

/** Makes a `DeviceLostError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const DeviceLostError: TaggedErrorClass<DeviceLostError> = Data.TaggedError(
  "DeviceLostError",
)<
  ErrorFields<DeviceLostError>
>;

/** A GPU operation failed: validation, out of memory, or a failed map. */
export interface GpuOperationError extends Cause.YieldableError {
  /** Always `"GpuOperationError"`. */
  readonly _tag: "GpuOperationError";
  /** Human-readable description. */
  readonly message: string;
  /** The operation that failed. */
  readonly operation: string;
}

/** Makes a `GpuOperationError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const GpuOperationError: TaggedErrorClass<GpuOperationError> = Data.TaggedError(
  "GpuOperationError",
)<
  ErrorFields<GpuOperationError>
>;

export type DeviceError = NoAdapterError | DeviceLostError | GpuOperationError;

/** Ranks cannot be placed on adapters as asked (too few adapters, a bad index, identical ones). */
export interface AdapterSelectionError extends Cause.YieldableError {
  /** Always `"AdapterSelectionError"`. */
  readonly _tag: "AdapterSelectionError";
  /** What was asked, what was found, and what to do instead. */
  readonly message: string;
}

/** Makes an `AdapterSelectionError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const AdapterSelectionError: TaggedErrorClass<AdapterSelectionError> = Data.TaggedError(
  "AdapterSelectionError",
)<
  ErrorFields<AdapterSelectionError>
>;
