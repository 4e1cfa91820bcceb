/**
 * Keeps the number of dead Dawn objects awaiting V8's collector small.
 *
 * dawn.node gives every WebGPU object it hands out (a command encoder, a compute pass, a
 * command buffer, a map or work-done promise) a napi reference with a finalizer. Those objects
 * outlive young-generation collections, so only a full (mark-compact) collection frees them, and
 * Deno's napi then finalizes a batch in time quadratic in its size: one readback makes ~4 such
 * objects, and 10,000 readbacks' worth took 2.5-4 s in one pause, 20,000 took 15 s
 * (`deno task bench:service soak` shows it as multi-second gaps while /health says ready). V8
 * starts a full collection by heap size, not by how many of them wait, and each one is small.
 *
 * So every GPU wait first runs a full collection when more than `COLLECT_AFTER_OBJECTS` Dawn
 * objects were made since the last: a pause of a few milliseconds instead of seconds, taken
 * while the GPU runs the work just submitted. That needs V8's `gc`, which Deno exposes with
 * `--v8-flags=--expose-gc` (every `deno task` passes it, and rank processes inherit it);
 * without it Tessera logs one warning and V8's own timing applies.
 */

/** Dawn objects made per command encoder: the encoder, its pass and its command buffer. */
export const OBJECTS_PER_ENCODER = 3;
/** Dawn objects made per GPU wait: the promise. */
export const OBJECTS_PER_WAIT = 1;
/** A full collection with ~1000 dead Dawn objects takes a few ms here; 4000, ~80 ms. */
export const COLLECT_AFTER_OBJECTS = 1000;

interface CollectorState {
  /** Dawn objects made since the last collection. */
  pending: number;
  /** Full collections run by `collectIfDue`. */
  collections: number;
  /** Command encoders made and not yet finalized by V8 (what a stall would have to free). */
  uncollectedEncoders: number;
}

const state: CollectorState = { pending: 0, collections: 0, uncollectedEncoders: 0 };

const encoderFinalized = new FinalizationRegistry<void>(() => {
  state.uncollectedEncoders--;
});

/** V8's `gc` when Deno runs with `--v8-flags=--expose-gc`. */
export const exposedGc = (): (() => void) | undefined => (globalThis as { gc?: () => void }).gc;

/** Whether bounded collection is possible in this isolate. */
export const canCollect = (): boolean => exposedGc() !== undefined;

/** Counts, from now on, the command encoders `device` (a Dawn device) makes. */
export const trackDawnEncoders = (device: GPUDevice): void => {
  const createCommandEncoder = device.createCommandEncoder;
  device.createCommandEncoder = function (
    this: GPUDevice,
    descriptor?: GPUCommandEncoderDescriptor,
  ) {
    const encoder = createCommandEncoder.call(this, descriptor);
    state.pending += OBJECTS_PER_ENCODER;
    state.uncollectedEncoders++;
    encoderFinalized.register(encoder);
    return encoder;
  };
};

let warned = false;

/** True the first time it is called in an isolate that cannot collect (to warn once). */
export const shouldWarnNoCollector = (): boolean => {
  if (warned || canCollect()) return false;
  warned = true;
  return true;
};

export const NO_COLLECTOR_WARNING =
  "V8's gc is not exposed, so Dawn's objects are freed only when V8 decides, in pauses of " +
  "seconds on a long run: start Deno with --v8-flags=--expose-gc (every deno task does)";

/**
 * Called by every Dawn wait, after its submit: a full collection if enough Dawn objects were
 * made since the last one.
 */
export const collectIfDue = (): void => {
  state.pending += OBJECTS_PER_WAIT;
  if (state.pending < COLLECT_AFTER_OBJECTS) return;
  const gc = exposedGc();
  if (gc === undefined) return;
  state.pending = 0;
  state.collections++;
  gc();
};

/** A copy of the collector's counts (tests and the benchmark). */
export const collectorState = (): Readonly<CollectorState> => ({ ...state });
