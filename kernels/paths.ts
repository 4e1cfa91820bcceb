/**
 * Which form of each feature-dependent kernel a device runs, chosen from the features probed
 * when it was created (gpu/device.ts), as the line the supervisor logs per rank at load.
 */
import { describeFeatures, type Gpu } from "../gpu/device.ts";

/**
 * E.g. `llvmpipe (dawn): +shader-f16 … ; sums by subgroupAdd, Q8_0 by unpack4xI8`. f16 weights
 * are widened with unpack2x16float on every device: it needs no shader-f16 and was 13% faster
 * than f16 loads on lavapipe.
 */
export const describeKernelPaths = (gpu: Gpu): string =>
  `${gpu.adapterName} (${gpu.backend}): ${describeFeatures(gpu.features)}; ` +
  `workgroup sums by ${gpu.features.subgroups ? "subgroupAdd" : "shared memory"}, ` +
  `Q8_0 bytes by ${gpu.features.packedIntegerDot ? "unpack4xI8" : "shifts"}`;
