/**
 * Flag values shared by the commands: usage errors as a typed failure (exit code 2), integer
 * checks, and the model/transport flags (`--model --tokenizer --tp --transport --ranks
 * --secret-file --weights --devices --share-adapter`) with their cross-checks and the transport
 * layer they choose, its ranks placed on the host's adapters.
 */
import { Data, Effect, Either, Layer } from "effect";
import {
  driverFilesFromEnv,
  listAdapters,
  parseDevices,
  placeRanks,
  type RankPlacement,
  requireOneProcess,
} from "../gpu/adapters.ts";
import { backendFromEnv } from "../gpu/device.ts";
import type { AdapterSelectionError } from "../gpu/errors.ts";
import { InProcessTransport } from "../ranks/transports.ts";
import { TcpTransport } from "../actors/tcp.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../ranks/transports.ts";
import type { SecretError } from "../wire/errors.ts";
import { loadSecret } from "../wire/handshake.ts";
import type { FlagTable } from "./flag_table.ts";
import type { WeightType } from "../kernels/matmul.ts";
import type { LoadLlamaOptions } from "../models/llama.ts";
import type { ModelSource } from "../actors/protocol.ts";

/** A flag the CLI cannot accept; exit code 2. */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

export const usage = (message: string) => Effect.fail(new UsageError({ message }));

export const positiveInt = (flag: string, value: string) =>
  /^\d+$/.test(value) && Number(value) >= 1 && Number.isSafeInteger(Number(value))
    ? Effect.succeed(Number(value))
    : usage(`--${flag} must be a positive integer, got ${JSON.stringify(value)}`);

/** An integer flag within [min, max]. */
export const intIn = (flag: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  /^\d+$/.test(value) && Number(value) >= min && Number(value) <= max
    ? Effect.succeed(Number(value))
    : usage(
      `--${flag} must be an integer ${
        max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`
      }, got ${JSON.stringify(value)}`,
    );

export const weightsOf = (value: string) =>
  value === "f32" || value === "f16" || value === "q8_0" || value === "q4_0"
    ? Effect.succeed<WeightType>(value)
    : usage(`--weights must be f32, f16, q8_0 or q4_0, got ${JSON.stringify(value)}`);

/** The model and transport flags, shared by every command that loads a model. */
export const modelFlagTable = {
  model: {
    type: "string",
    short: "m",
    value: "PATH",
    help: "a llama2.c checkpoint (.bin) or a Hugging Face directory (required)",
  },
  tokenizer: {
    type: "string",
    value: "PATH",
    help: "llama2.c tokenizer.bin, or a Hugging Face tokenizer.json or its directory",
    defaultNote: "tokenizer.bin beside a .bin; a directory's own tokenizer.json",
  },
  tp: { type: "string", value: "N", default: "1", help: "tensor-parallel ranks" },
  transport: {
    type: "string",
    value: "KIND",
    help: "how ranks run: inprocess (this isolate), workers (Web Workers) or tcp (processes)",
    defaultNote: "workers when --tp > 1, else inprocess",
  },
  weights: {
    type: "string",
    value: "TYPE",
    default: "f32",
    help: "element type of the matmul weights on the devices: f32, f16, q8_0 or q4_0",
  },
  ranks: {
    type: "string",
    value: "LIST",
    help: "tcp: HOST:PORT of each rank started with `deno task rank`, comma-separated",
    defaultNote: "local rank processes",
  },
  "secret-file": {
    type: "string",
    value: "FILE",
    help: "tcp: the shared secret the ranks were started with",
  },
  devices: {
    type: "string",
    value: "LIST",
    help: "adapter index of each rank, comma-separated (an error lists the host's adapters)",
    defaultNote: "TESSERA_DEVICES, else rank r on adapter r",
  },
  "share-adapter": {
    type: "boolean",
    help: "let ranks share an adapter (a CPU renderer such as lavapipe, or tests)",
  },
  "max-model-len": {
    type: "string",
    value: "N",
    help: "positions each sequence may reach; sizes the KV cache (refused if it does not fit)",
    defaultNote: "the model's, cut to what the memory plan allows",
  },
  "kv-cache-dtype": {
    type: "string",
    value: "TYPE",
    default: "auto",
    help: "KV-cache element type: auto (f16 where every adapter has shader-f16), f32 or f16",
  },
  "gpu-memory-utilization": {
    type: "string",
    value: "F",
    default: "0.9",
    help: "share of each rank's memory the plan may use, in (0, 1]",
  },
  "gpu-memory-gib": {
    type: "string",
    value: "G",
    help: "each rank's device memory in GiB (WebGPU does not report it)",
    defaultNote: "CPU renderers: the host's available memory over the ranks; GPUs: unknown",
  },
} as const satisfies FlagTable;

export type TransportName = "inprocess" | "workers" | "tcp";

export interface ModelFlags {
  readonly model: string;
  readonly tokenizer?: string;
  readonly tp: number;
  readonly transport: TransportName;
  /** Element type of the matmul weights on the devices. */
  readonly weights: WeightType;
  /** tcp: rank addresses (else local rank processes) and the shared secret's file. */
  readonly ranks?: readonly string[];
  readonly secretFile?: string;
  /** Adapter index of each rank (`--devices`, `TESSERA_DEVICES`). */
  readonly devices?: readonly number[];
  /** Ranks may share an adapter (`--share-adapter`). */
  readonly shareAdapter: boolean;
  /** The memory plan's inputs, as LlamaModel.load takes them. */
  readonly memory: MemoryFlags;
}

/** `--max-model-len --kv-cache-dtype --gpu-memory-utilization --gpu-memory-gib`. */
export type MemoryFlags = Pick<
  LoadLlamaOptions,
  "maxModelLen" | "kvCacheDtype" | "gpuMemoryBytes" | "gpuMemoryUtilization"
>;

/** What the parser gives for `modelFlagTable`. */
interface ModelFlagValues {
  readonly model?: string;
  readonly tokenizer?: string;
  readonly tp: string;
  readonly transport?: string;
  readonly weights: string;
  readonly ranks?: string;
  readonly "secret-file"?: string;
  readonly devices?: string;
  readonly "share-adapter": boolean;
  readonly "max-model-len"?: string;
  readonly "kv-cache-dtype": string;
  readonly "gpu-memory-utilization": string;
  readonly "gpu-memory-gib"?: string;
}

/**
 * Checks the model and transport flags together. `tpOf` checks `--tp` itself: each command
 * keeps the wording of its own integer messages.
 */
export const modelFlagsOf = (
  values: ModelFlagValues,
  tpOf: (value: string) => Effect.Effect<number, UsageError>,
): Effect.Effect<ModelFlags, UsageError> =>
  Effect.gen(function* () {
    if (values.model === undefined) return yield* usage("--model PATH is required");
    const tp = yield* tpOf(values.tp);
    // Workers by default when there is more than one rank: each gets its own isolate and device.
    const transport = values.transport ?? (tp > 1 ? "workers" : "inprocess");
    if (transport !== "inprocess" && transport !== "workers" && transport !== "tcp") {
      return yield* usage(`--transport must be inprocess, workers or tcp, got ${transport}`);
    }
    const ranks = values.ranks?.split(",").map((a) => a.trim());
    if ((ranks || values["secret-file"]) && transport !== "tcp") {
      return yield* usage("--ranks and --secret-file go with --transport tcp");
    }
    if (ranks && !values["secret-file"]) return yield* usage("--ranks needs --secret-file");
    if (ranks && ranks.length !== tp) {
      return yield* usage(`--tp is ${tp} but --ranks lists ${ranks.length} addresses`);
    }
    const devicesText = values.devices ?? Deno.env.get("TESSERA_DEVICES");
    const devices = devicesText === undefined ? undefined : parseDevices(devicesText);
    if (devices && Either.isLeft(devices)) {
      return yield* usage(`--devices: ${devices.left.message}`);
    }
    if (devices && ranks) {
      return yield* usage(
        "--devices places local ranks; a rank started with `deno task rank` picks its own adapter",
      );
    }
    if (devices && devices.right.length !== tp) {
      return yield* usage(`--tp is ${tp} but --devices lists ${devices.right.length} adapters`);
    }
    return {
      model: values.model,
      tokenizer: values.tokenizer,
      tp,
      transport,
      weights: yield* weightsOf(values.weights),
      ranks,
      secretFile: values["secret-file"],
      devices: devices?.right,
      shareAdapter: values["share-adapter"],
      memory: yield* memoryFlagsOf(values),
    };
  });

/**
 * LlamaModel.load's options from the model flags. `ctxSize` (generate's and chat's `-c`) also
 * sizes the KV cache, unless `--max-model-len` does.
 */
export const loadOptionsOf = (
  flags: ModelFlags,
  source: ModelSource,
  ctxSize?: number,
): LoadLlamaOptions => ({
  source,
  tp: flags.tp,
  weights: flags.weights,
  ...flags.memory,
  maxModelLen: flags.memory.maxModelLen ?? ctxSize,
});

const memoryFlagsOf = (values: ModelFlagValues): Effect.Effect<MemoryFlags, UsageError> =>
  Effect.gen(function* () {
    const dtype = values["kv-cache-dtype"];
    if (dtype !== "auto" && dtype !== "f32" && dtype !== "f16") {
      return yield* usage(
        `--kv-cache-dtype must be auto, f32 or f16, got ${JSON.stringify(dtype)}`,
      );
    }
    const utilization = Number(values["gpu-memory-utilization"]);
    if (!(utilization > 0 && utilization <= 1)) {
      return yield* usage(
        `--gpu-memory-utilization must be a number in (0, 1], got ${
          JSON.stringify(values["gpu-memory-utilization"])
        }`,
      );
    }
    const gib = values["gpu-memory-gib"];
    if (gib !== undefined && !(Number(gib) > 0)) {
      return yield* usage(`--gpu-memory-gib must be a positive number, got ${JSON.stringify(gib)}`);
    }
    const maxModelLen = values["max-model-len"];
    return {
      maxModelLen: maxModelLen === undefined
        ? undefined
        : yield* positiveInt("max-model-len", maxModelLen),
      kvCacheDtype: dtype,
      gpuMemoryUtilization: utilization,
      gpuMemoryBytes: gib === undefined ? undefined : Math.floor(Number(gib) * 2 ** 30),
    };
  });

/**
 * Each local rank's adapter: rank r on adapter r (or `--devices`), refused with the host's
 * adapter list when there are too few and `--share-adapter` was not given. Undefined (every
 * rank takes the first adapter) for one rank, for shared adapters without `--devices`, and for
 * remote ranks, which pick their own.
 */
export const placementsOf = (
  flags: ModelFlags,
): Effect.Effect<readonly RankPlacement[] | undefined, AdapterSelectionError> =>
  Effect.gen(function* () {
    if (flags.ranks !== undefined) return undefined;
    if (flags.devices === undefined && (flags.tp === 1 || flags.shareAdapter)) return undefined;
    const adapters = yield* listAdapters(backendFromEnv());
    const placements = yield* placeRanks(
      flags.tp,
      adapters,
      { devices: flags.devices, shareAdapter: flags.shareAdapter },
      driverFilesFromEnv(),
    );
    return flags.transport === "tcp"
      ? placements
      : yield* requireOneProcess(placements, flags.transport);
  });

/**
 * Workers give each rank its own isolate and Dawn device; in-process ranks share this isolate
 * (and its one Dawn instance per adapter), each with its own device; tcp ranks are processes.
 */
export const transportLayer = (
  flags: ModelFlags,
): Layer.Layer<Transport, SecretError | AdapterSelectionError> =>
  Layer.unwrapEffect(Effect.gen(function* () {
    const placements = yield* placementsOf(flags);
    switch (flags.transport) {
      case "workers":
        return WorkersTransport({ placements });
      case "tcp":
        // Given addresses: ranks someone started with `deno task rank`; else local processes.
        return flags.secretFile === undefined ? TcpTransport({ placements }) : TcpTransport({
          ranks: flags.ranks,
          key: yield* loadSecret(flags.secretFile),
          placements,
        });
      case "inprocess":
        return InProcessTransport({ placements });
    }
  }));

/**
 * How many tokens may be generated after a prompt of `promptTokens` (BOS included): `maxTokens`,
 * cut to what is left of `--ctx-size` (default: the model's `seq_len`, which it may not exceed).
 */
export const tokensWithinContext = (
  promptTokens: number,
  maxTokens: number,
  ctxSize: number | undefined,
  seqLen: number,
): Effect.Effect<number, UsageError> => {
  if (ctxSize !== undefined && ctxSize > seqLen) {
    return usage(`--ctx-size ${ctxSize} is more than the model's seq_len ${seqLen}`);
  }
  const context = ctxSize ?? seqLen;
  if (promptTokens >= context) {
    return usage(
      `the prompt is ${promptTokens} tokens (with BOS): no room to generate within a context ` +
        `of ${context}${ctxSize === undefined ? " (the model's seq_len)" : " (--ctx-size)"}`,
    );
  }
  return Effect.succeed(Math.min(maxTokens, context - promptTokens));
};
