import { Data } from "effect";

/** No WebGPU adapter could be found by any backend. */
export class NoAdapterError extends Data.TaggedError("NoAdapterError")<{
  readonly message: string;
}> {}

/** The device was lost (driver reset, destroyed, out of memory) while in use. */
export class DeviceLostError extends Data.TaggedError("DeviceLostError")<{
  readonly message: string;
  readonly reason: string;
}> {}

/** A GPU operation failed: validation, out of memory, or a failed map. */
export class GpuOperationError extends Data.TaggedError("GpuOperationError")<{
  readonly message: string;
  readonly operation: string;
}> {}

export type DeviceError = NoAdapterError | DeviceLostError | GpuOperationError;
