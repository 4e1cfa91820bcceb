/**
 * What the service asks of the inference engine, as one Effect service: submit a tokenized
 * request and get its tokens as a stream, ask whether the ranks are healthy. The engine behind
 * it batches every running request into one step (continuous batching) and restarts a rank
 * group that died; the HTTP layer only maps this vocabulary to OpenAI's.
 */
import { type Cause, Context, Data, type Effect, type Stream } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";

/** One request, already tokenized (BOS included where the model wants it). */
export interface GenerationRequest {
  /** The prompt's token ids. */
  readonly promptTokens: readonly number[];
  /** Most tokens to generate; at least 1. */
  readonly maxTokens: number;
  /** 0 is greedy. */
  readonly temperature: number;
  /** Nucleus mass, run.c semantics: on inside (0, 1). */
  readonly topP: number;
  /** Sampler seed (not 0); the engine picks one when absent. Unused when greedy. */
  readonly seed?: number | bigint;
  /** End at the tokenizer's EOS/BOS ids. */
  readonly stopAtEos: boolean;
}

/** Why a generation ended, as OpenAI names it. */
export type FinishReason = "stop" | "length";

/** One generated token; the last one of a stream carries `finishReason`. */
export interface GeneratedPiece {
  /** The token id. */
  readonly token: number;
  /** Text this token completed (a stop token carries ""); the last adds the decoder's rest. */
  readonly text: string;
  /** Why the generation ended; only on the last piece. */
  readonly finishReason?: FinishReason;
}

/** The queue of waiting requests is full: try later (HTTP 429). */
export interface QueueFull extends Cause.YieldableError {
  /** Always `"QueueFull"`. */
  readonly _tag: "QueueFull";
  /** Human-readable description. */
  readonly message: string;
}

/** Makes a `QueueFull` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const QueueFull: TaggedErrorClass<QueueFull> = Data.TaggedError("QueueFull")<
  ErrorFields<QueueFull>
>;

/** The ranks are starting, restarting or shutting down: retry after a while (HTTP 503). */
export interface EngineUnavailable extends Cause.YieldableError {
  /** Always `"EngineUnavailable"`. */
  readonly _tag: "EngineUnavailable";
  /** Human-readable description. */
  readonly message: string;
  /** Suggested wait before retrying (the `Retry-After` header). */
  readonly retryAfterSeconds: number;
}

/** Makes a `EngineUnavailable` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const EngineUnavailable: TaggedErrorClass<EngineUnavailable> = Data.TaggedError(
  "EngineUnavailable",
)<
  ErrorFields<EngineUnavailable>
>;

/** The request cannot run on this model, e.g. a prompt longer than the context (HTTP 400). */
export interface RequestRejected extends Cause.YieldableError {
  /** Always `"RequestRejected"`. */
  readonly _tag: "RequestRejected";
  /** Human-readable description. */
  readonly message: string;
  /** The request field at fault, for the error body's `param`. */
  readonly param?: string;
}

/** Makes a `RequestRejected` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const RequestRejected: TaggedErrorClass<RequestRejected> = Data.TaggedError(
  "RequestRejected",
)<
  ErrorFields<RequestRejected>
>;

/**
 * A generation that had started was lost (its rank group died and it could not be resumed).
 * Retriable: the same request sent again will run once the group is back.
 */
export interface GenerationFailed extends Cause.YieldableError {
  /** Always `"GenerationFailed"`. */
  readonly _tag: "GenerationFailed";
  /** Human-readable description. */
  readonly message: string;
  /** Whether sending the same request again may succeed. */
  readonly retriable: boolean;
  /** Suggested wait before retrying (the `Retry-After` header), when retriable. */
  readonly retryAfterSeconds?: number;
}

/** Makes a `GenerationFailed` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const GenerationFailed: TaggedErrorClass<GenerationFailed> = Data.TaggedError(
  "GenerationFailed",
)<
  ErrorFields<GenerationFailed>
>;

/** Why a request could not be queued. */
export type SubmitError = QueueFull | EngineUnavailable | RequestRejected;

/** Why a fault drill was refused: no such rank or duration, or no group to act on now. */
export type DrillError = RequestRejected | EngineUnavailable;

/**
 * Where the engine's rank group is in its life cycle. "stalled": the group made no progress
 * with requests in flight for the stall bound and is being restarted because of it.
 */
export type EngineState =
  | "starting"
  | "ready"
  | "restarting"
  | "stalled"
  | "draining"
  | "stopped";

/** One rank of the current group, as reported by the health check. */
export interface RankHealth {
  /** The rank's index. */
  readonly rank: number;
  /** False once the rank has died (until the group is restarted). */
  readonly alive: boolean;
  /** Its WebGPU backend. */
  readonly backend: string;
  /** Its adapter's name. */
  readonly adapter: string;
  /** Bytes of weight shards on its device. */
  readonly weightBytes: number;
  /** Bytes of KV cache on its device. */
  readonly kvCacheBytes: number;
  /** Bytes of the step's buffers, as the memory plan counted them. */
  readonly activationBytes: number;
  /** What the memory plan let it use; absent when its memory is unknown. */
  readonly memoryBudgetBytes?: number;
  /** Positions each sequence may reach (the plan's context). */
  readonly contextLength: number;
  /** The model's own context (seq_len, max_position_embeddings). */
  readonly modelContextLength: number;
}

/** One restart of the rank group. */
export interface RestartRecord {
  /** When the failure was noticed, in milliseconds since the Unix epoch. */
  readonly at: number;
  /** The rank that died or failed. */
  readonly rank: number;
  /** What happened to it. */
  readonly reason: string;
}

/** A snapshot of the engine for health checks and `/health`. */
export interface EngineHealth {
  /** The life-cycle state. */
  readonly state: EngineState;
  /** The ranks of the current group. */
  readonly ranks: readonly RankHealth[];
  /** Rank-group restarts so far (stalls included). */
  readonly restarts: number;
  /** Restarts the stall watchdog asked for. */
  readonly stalls: number;
  /** Requests waiting for a slot, and requests decoding now. */
  readonly waiting: number;
  /** Requests decoding now. */
  readonly running: number;
  /** The latest restarts, newest last (at most 10). */
  readonly recentRestarts: readonly RestartRecord[];
  /** Tokens generated in each of the last 60 whole seconds, oldest first. */
  readonly tokensPerSecond: readonly number[];
}

/** The inference engine's operations (the service behind {@link InferenceEngine}). */
export interface InferenceEngineShape {
  /** Served model name (for `/v1/models` and the `model` field of responses). */
  readonly modelId: string;
  /** The model's tokenizer (requests arrive tokenized). */
  readonly tokenizer: TextTokenizer;
  /** Positions per sequence (prompt + generated). */
  readonly contextLength: number;
  /**
   * Queues a request. Fails at once when it cannot be queued; otherwise the stream yields its
   * tokens as the batched steps produce them. Interrupting the stream (a client gone) frees
   * the request's slot at the next step.
   */
  readonly submit: (
    request: GenerationRequest,
  ) => Effect.Effect<Stream.Stream<GeneratedPiece, GenerationFailed>, SubmitError>;
  /** The current {@link EngineHealth}. */
  readonly health: Effect.Effect<EngineHealth>;
  /**
   * Stops admitting requests and waits, at most `timeoutMillis`, for those in flight to finish;
   * whatever is still running then fails with a retriable `GenerationFailed`.
   */
  readonly drain: (timeoutMillis: number) => Effect.Effect<void>;
  /**
   * Fault drill: stops one rank of the current group abruptly, as a crash would; the engine
   * must notice, restart the group and resume what was running. Refused (RequestRejected) for
   * a rank outside the group, and (EngineUnavailable) while the group restarts.
   */
  readonly killRank: (rank: number) => Effect.Effect<void, DrillError>;
  /**
   * Fault drill: one rank of the current group sits idle for `millis` (1 to 600 000) before
   * its next command, alive; with requests in flight the stall watchdog must notice, restart
   * the group and resume them. Refused as `killRank` is, and for a duration out of range.
   */
  readonly pauseRank: (rank: number, millis: number) => Effect.Effect<void, DrillError>;
}

/** The service key of {@link InferenceEngine}. */
export type InferenceEngine = Context.TagClassShape<
  "tessera/InferenceEngine",
  InferenceEngineShape
>;

/** The inference engine as an Effect service (a `Context.Tag`); see `makeInferenceEngine`. */
export const InferenceEngine: Context.TagClass<
  InferenceEngine,
  "tessera/InferenceEngine",
  InferenceEngineShape
> = Context.Tag("tessera/InferenceEngine")<InferenceEngine, InferenceEngineShape>();
