/**
 * The options of the plain Promise API (`Tessera.load`, `generate`, `complete`), their checks
 * (a `ConfigError` naming the option, before any file is opened or rank started) and the
 * Effect layers they choose: the transport, and logs at the chosen level.
 */
import { Effect, Layer } from "effect";
import { type InProcessOptions, InProcessTransport } from "../ranks/transports.ts";
import { type TcpOptions, TcpTransport } from "../actors/tcp.ts";
import type { Transport } from "../actors/transport.ts";
import { type WorkersOptions, WorkersTransport } from "../ranks/transports.ts";
import type { WeightType } from "../kernels/matmul.ts";
import { ConfigError } from "../models/errors.ts";
import { LOG_LEVELS, loggingLayer, type LogLevelName } from "../observe/logging.ts";
import { type Telemetry, telemetryLayer } from "../observe/telemetry.ts";
import type { SecretError } from "../wire/errors.ts";
import { loadSecret } from "../wire/handshake.ts";

/** Ranks as fibers of this isolate, each with its own WebGPU device. */
export interface InProcessTransportOption extends InProcessOptions {
  /** Always `"inprocess"`. */
  readonly kind: "inprocess";
}

/** One Deno Worker per rank, each with its own WebGPU device; shared-memory collectives. */
export interface WorkersTransportOption extends WorkersOptions {
  /** Always `"workers"`. */
  readonly kind: "workers";
}

/**
 * One process per rank over TCP: without `ranks`, `tp` rank processes started on loopback;
 * with `ranks`, ranks started with `deno task rank`, authenticated with the shared secret
 * (`secretFile`, or `key`).
 */
export interface TcpTransportOption extends TcpOptions {
  /** Always `"tcp"`. */
  readonly kind: "tcp";
  /** The shared secret's file, as given to `deno task rank --secret-file`. */
  readonly secretFile?: string;
}

/** Where the ranks run: a transport's name (its defaults), or its kind with options. */
export type TransportOption =
  | "inprocess"
  | "workers"
  | "tcp"
  | InProcessTransportOption
  | WorkersTransportOption
  | TcpTransportOption;

/** Options of `Tessera.load`. */
export interface TesseraOptions {
  /** A llama2.c checkpoint (a file) or a Hugging Face Llama (a directory). */
  readonly model: string;
  /**
   * A llama2.c `tokenizer.bin` (default: `tokenizer.bin` beside the model); a Hugging Face
   * directory uses its own `tokenizer.json`.
   */
  readonly tokenizer?: string;
  /** Ranks (tensor-parallel size); must divide the model's heads. Default 1. */
  readonly tp?: number;
  /** Default `"inprocess"` at tp 1, `"workers"` above. */
  readonly transport?: TransportOption;
  /**
   * Matmul weights on the devices: `"f32"` (default, exact), `"f16"` (half the bytes) or
   * `"q8_0"` / `"q4_0"` (llama.cpp's blocks, quantized at load: about a quarter / an eighth).
   */
  readonly weights?: WeightType;
  /** Structured logs on stderr at this level and above. Default `"warning"`. */
  readonly logLevel?: LogLevelName;
  /** Aborting it stops the load (ranks already started are shut down) and rejects with its reason. */
  readonly signal?: AbortSignal;
}

/** Options of `generate` and `complete`. */
export interface TesseraGenerateOptions {
  /** Most tokens to generate (the prompt not counted). Default: until the context is full. */
  readonly maxTokens?: number;
  /** 0 (the default) is greedy; above 0 samples as llama2.c's run.c does. */
  readonly temperature?: number;
  /** Nucleus mass when sampling: on inside (0, 1), off otherwise. Default 0.9. */
  readonly topP?: number;
  /** Seed of the sampler (not 0). Default: the current time. Unused when greedy. */
  readonly seed?: number | bigint;
  /** End at EOS or BOS (the stop token is the last piece, with no text). Default true. */
  readonly stopAtEos?: boolean;
  /** Aborting it ends the generation after the step in flight; it then rejects with its reason. */
  readonly signal?: AbortSignal;
}

/** The transport's name. */
export type TransportName = "inprocess" | "workers" | "tcp";

/** {@link TesseraOptions} checked, with defaults applied. */
export interface CheckedOptions {
  readonly model: string;
  readonly tokenizer?: string;
  readonly tp: number;
  readonly transport: Exclude<TransportOption, string>;
  readonly weights: WeightType;
  readonly logLevel: LogLevelName;
}

const configError = (message: string) => new ConfigError({ message });

/** The options with defaults, or a `ConfigError` naming the first one that cannot work. */
export const checkOptions = (options: TesseraOptions): CheckedOptions => {
  if (typeof options !== "object" || options === null) {
    throw configError("Tessera.load needs an options object: { model, tokenizer?, tp?, ... }");
  }
  const { model, tokenizer, tp = 1, weights = "f32", logLevel = "warning" } = options;
  if (typeof model !== "string" || model === "") {
    throw configError(`model must be the path of a model file or directory, got ${model}`);
  }
  if (tokenizer !== undefined && (typeof tokenizer !== "string" || tokenizer === "")) {
    throw configError(`tokenizer must be a file path, got ${tokenizer}`);
  }
  if (!(Number.isSafeInteger(tp) && tp >= 1)) {
    throw configError(`tp must be a positive integer, got ${tp}`);
  }
  if (!["f32", "f16", "q8_0", "q4_0"].includes(weights)) {
    throw configError(`weights must be "f32", "f16", "q8_0" or "q4_0", got ${weights}`);
  }
  if (!(LOG_LEVELS as readonly unknown[]).includes(logLevel)) {
    throw configError(`logLevel must be one of ${LOG_LEVELS.join(", ")}, got ${logLevel}`);
  }
  const named = options.transport ?? (tp > 1 ? "workers" : "inprocess");
  const transport = typeof named === "string" ? { kind: named } : named;
  if (
    typeof transport !== "object" || transport === null ||
    !["inprocess", "workers", "tcp"].includes(transport.kind)
  ) {
    throw configError(
      `transport must be "inprocess", "workers" or "tcp" (or { kind, ...options }), got ${
        JSON.stringify(named)
      }`,
    );
  }
  if (transport.kind === "tcp") checkTcp(transport as TcpTransportOption, tp);
  return {
    model,
    tokenizer,
    tp,
    transport: transport as CheckedOptions["transport"],
    weights,
    logLevel,
  };
};

const checkTcp = (tcp: TcpTransportOption, tp: number) => {
  if (tcp.ranks === undefined) return;
  if (!Array.isArray(tcp.ranks) || !tcp.ranks.every((r) => typeof r === "string")) {
    throw configError(`transport.ranks must be "host:port" strings, got ${tcp.ranks}`);
  }
  if (tcp.ranks.length !== tp) {
    throw configError(`tp is ${tp} but transport.ranks lists ${tcp.ranks.length} addresses`);
  }
  if ((tcp.secretFile === undefined) === (tcp.key === undefined)) {
    throw configError("transport.ranks needs the shared secret: give secretFile or key (one)");
  }
};

/** The transport layer the checked options name. */
const transportLayer = (
  transport: CheckedOptions["transport"],
): Layer.Layer<Transport, SecretError> => {
  switch (transport.kind) {
    case "inprocess":
      return InProcessTransport(transport);
    case "workers":
      return WorkersTransport(transport);
    case "tcp": {
      const { secretFile } = transport;
      return secretFile === undefined ? TcpTransport(transport) : Layer.unwrapEffect(
        Effect.map(loadSecret(secretFile), (key) => TcpTransport({ ...transport, key })),
      );
    }
  }
};

/** Everything a model's runtime provides: its transport, and logs (ranks' too) at the level. */
export const runtimeLayer = (
  options: CheckedOptions,
): Layer.Layer<Transport | Telemetry, SecretError> =>
  Layer.mergeAll(
    transportLayer(options.transport),
    telemetryLayer({ logLevel: options.logLevel }),
    loggingLayer(options.logLevel),
  );
