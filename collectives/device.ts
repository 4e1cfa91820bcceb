/**
 * Collectives over GPU buffers. WebGPU has no peer-to-peer path, so a collective is exactly: one
 * readback of the partial (in the same submit as the commands that produced it), the combine on
 * the host, and (when the result stays on the device) one write back.
 */
import { Effect } from "effect";
import type { Gpu } from "../gpu/device.ts";
import { type Readback, writeBuffer } from "../gpu/buffers.ts";
import { noTimeline, type Timeline, withSpan } from "../observe/timeline.ts";
import type { Communicator } from "./communicator.ts";
import { elementCount, type HostTensor, tensor } from "./tensor.ts";

export interface DeviceCollectiveArgs {
  /** Commands producing `source`; submitted together with the readback. */
  readonly encoder: GPUCommandEncoder;
  readonly source: GPUBuffer;
  readonly shape: readonly number[];
  /** Staging buffer reused across steps (allocated with the layer's activations). */
  readonly readback: Readback;
  /** Where to write the result back on the device, if it is needed there. */
  readonly writeBackTo?: GPUBuffer;
  /** Host memory for the download (elementCount(shape) floats), reused across steps. */
  readonly host?: Float32Array;
  /** Records the download and upload as transfer spans and the exchange as a wait span. */
  readonly timeline?: Timeline;
}

const download = (args: DeviceCollectiveArgs) =>
  Effect.gen(function* () {
    const data = args.host ?? new Float32Array(elementCount(args.shape));
    yield* args.readback.read(args.source, new Uint8Array(data.buffer), { encoder: args.encoder });
    return tensor(args.shape, data);
  }).pipe((read) =>
    withSpan(
      args.timeline ?? noTimeline,
      "download",
      "transfer",
      read,
      args.timeline?.enabled ? { bytes: elementCount(args.shape) * 4 } : undefined,
    )
  );

const writeBack = (gpu: Gpu, args: DeviceCollectiveArgs) => (result: HostTensor) =>
  withSpan(
    args.timeline ?? noTimeline,
    "upload",
    "transfer",
    Effect.sync(() => {
      if (args.writeBackTo) writeBuffer(gpu, args.writeBackTo, result.data);
      return result;
    }),
  );

/** The exchange itself: waiting for the other ranks (and combining). */
const exchange = <E>(
  args: DeviceCollectiveArgs,
  name: string,
  effect: Effect.Effect<HostTensor, E>,
) => withSpan(args.timeline ?? noTimeline, name, "wait", effect);

/** Sum of every rank's `source`. */
export const allReduceBuffer = (gpu: Gpu, comm: Communicator, args: DeviceCollectiveArgs) =>
  download(args).pipe(
    Effect.flatMap((t) => exchange(args, "allReduce", comm.allReduce(t))),
    Effect.flatMap(writeBack(gpu, args)),
  );

/** Every rank's `source` concatenated along `axis`. */
export const allGatherBuffer = (
  gpu: Gpu,
  comm: Communicator,
  args: DeviceCollectiveArgs & { readonly axis: number },
) =>
  download(args).pipe(
    Effect.flatMap((t) => exchange(args, "allGather", comm.allGather(t, args.axis))),
    Effect.flatMap(writeBack(gpu, args)),
  );
