/**
 * Tessera: tensor-parallel LLM inference for Deno on WebGPU.
 *
 * Two ways in. The plain Promise API, {@link Tessera}, needs no other import:
 *
 * ```ts
 * import { Tessera } from "jsr:@tessera/tp";
 *
 * await using llm = await Tessera.load({ model: "stories260K.bin", tokenizer: "tok512.bin", tp: 2 });
 * for await (const piece of llm.generate("Once upon a time", { maxTokens: 64 })) {
 *   Deno.stdout.writeSync(new TextEncoder().encode(piece.text));
 * }
 * ```
 *
 * The Effect API (services, layers, typed errors, streams) is everything else here, used with
 * `effect` itself:
 *
 * ```ts
 * import { Effect } from "effect";
 * import { InProcessTransport, loadParallelLayer, Supervisor, tensor } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   yield* loadParallelLayer(supervisor, { _tag: "ParallelMlp", name: "mlp", dim: 4, hidden: 8, activation: "gelu" }, [
 *     tensor([4, 8], new Float32Array(32).fill(0.1)),
 *     tensor([8, 4], new Float32Array(32).fill(0.1)),
 *   ]);
 *   const [y] = yield* supervisor.forward("mlp", tensor([1, 4], new Float32Array([1, 2, 3, 4])));
 *   return y.data;
 * });
 * console.log(await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(InProcessTransport()))));
 * ```
 *
 * @module
 */
export { Tessera } from "./promise/tessera.ts";
export {
  type InProcessTransportOption,
  type TcpTransportOption,
  type TesseraGenerateOptions,
  type TesseraOptions,
  type TransportName,
  type TransportOption,
  type WorkersTransportOption,
} from "./promise/options.ts";
export { ModelClosed } from "./promise/errors.ts";
export { type ReplyObserver, Supervisor, type SupervisorOptions } from "./actors/supervisor.ts";
export { loadParallelLayer } from "./layers/load.ts";
export type {
  RankContext,
  RankProgram,
  RankProgramError,
  RankProgramFactory,
  RankProgramSet,
} from "./actors/rank_program.ts";
export { standardRankPrograms } from "./ranks/programs.ts";
export { type InProcessOptions, InProcessTransport } from "./ranks/transports.ts";
export { type WorkersOptions, WorkersTransport } from "./ranks/transports.ts";
export { type TcpOptions, TcpTransport } from "./actors/tcp.ts";
export { type RankServerOptions, serveRank } from "./actors/rank_server.ts";
export { importSecret, loadSecret } from "./wire/handshake.ts";
export { SecretError, WireError } from "./wire/errors.ts";
export {
  type RankGroup,
  type RankHandle,
  type SpawnError,
  Transport,
  type TransportShape,
} from "./actors/transport.ts";
export {
  InvalidInput,
  PlanError,
  RankFailed,
  type StepFailure,
  TransportError,
} from "./actors/errors.ts";
export {
  ColumnParallelSpec,
  LayerSpec,
  type ModelSource,
  type Name,
  type NonNegativeInt,
  ParallelMlpSpec,
  RankCommand,
  RankReply,
  RowParallelSpec,
  type Size,
} from "./actors/protocol.ts";
export { CollectiveError, RankDied } from "./collectives/errors.ts";
export {
  type CollectiveFailure,
  type CollectiveGroup,
  type Communicator,
  stepCommunicator,
} from "./collectives/communicator.ts";
export { InProcessGroup, type InProcessGroupOptions } from "./collectives/inprocess.ts";
export type { CollectiveStats } from "./collectives/stats.ts";
export type { SharedRegionOptions } from "./collectives/shared_memory.ts";
export {
  CollectiveOp,
  Contribution,
  type ContributionFields,
  type DTypeSchema,
  TensorPayload,
} from "./collectives/protocol.ts";
export {
  concat,
  type DType,
  type HostTensor,
  partRange,
  slice,
  splitSizes,
  tensor,
} from "./collectives/tensor.ts";
export {
  acquireGpu,
  type Backend,
  type BackendChoice,
  type Gpu,
  type GpuFeatures,
} from "./gpu/device.ts";
export type { WeightType } from "./kernels/matmul.ts";
export {
  AdapterSelectionError,
  DeviceLostError,
  GpuOperationError,
  NoAdapterError,
} from "./gpu/errors.ts";
export {
  describeMemoryPlan,
  type KvCacheDtype,
  type MemoryPlan,
  type MemoryPlanOptions,
  planMemory,
  type RankMemory,
} from "./models/memory_plan.ts";
export {
  type AdapterListing,
  type DeviceRequest,
  type DriverFiles,
  driverFilesFromEnv,
  listAdapters,
  placeRanks,
  type RankPlacement,
} from "./gpu/adapters.ts";
export {
  ColumnParallelLinear,
  type ColumnSpec,
  RowParallelLinear,
  type RowSpec,
} from "./layers/linear.ts";
export { type MlpSpec, ParallelMlp } from "./layers/mlp.ts";
export type {
  ParallelLayerKind,
  RankLayer,
  StepContext,
  StepFailure as LayerStepFailure,
} from "./layers/layer.ts";
export {
  type HeadRequest,
  LlamaModel,
  type LoadLlamaError,
  type LoadLlamaOptions,
  type StepRow,
} from "./models/llama.ts";
export type { LlamaConfig, RopeLayout } from "./models/config.ts";
export type { RopeFrequencies, RopeScaling } from "./models/rope_scaling.ts";
export { ConfigError, LoadError } from "./models/errors.ts";
export { planLlama, type RankPlan, type Span } from "./models/plan.ts";
export { openLlama2c } from "./models/llama2c.ts";
export { loadHuggingFaceTokenizer, openHuggingFace } from "./models/huggingface.ts";
export {
  loadLlama2cTokenizer,
  type StreamDecoder,
  type TextTokenizer,
} from "./models/tokenizer.ts";
export {
  type CandidateList,
  type CandidateSample,
  finiteCandidates,
  NonFiniteLogits,
  Sampler,
  type SamplerOptions,
} from "./models/sampler.ts";
export {
  generate,
  type GeneratedToken,
  type GenerateError,
  GenerateInputError,
  type GenerateOptions,
} from "./engine/generate.ts";
export { loadTokenizer, modelSourceOf } from "./models/files.ts";
export {
  type DrillError,
  type EngineHealth,
  type EngineState,
  EngineUnavailable,
  type FinishReason,
  type GeneratedPiece,
  GenerationFailed,
  type GenerationRequest,
  InferenceEngine,
  type InferenceEngineShape,
  QueueFull,
  type RankHealth,
  RequestRejected,
  type RestartRecord,
  type SubmitError,
} from "./engine/engine.ts";
export { type EngineOptions, makeInferenceEngine } from "./engine/scheduler.ts";
export {
  ChatTemplate,
  type ChatTemplateShape,
  defaultChatTemplate,
  loadChatTemplate,
  type RenderedPrompt,
} from "./serve/chat_template.ts";
export { type RunningServer, type ServerOptions, startServer } from "./serve/server.ts";
export type { ErrorFields, TaggedErrorClass } from "./util/tagged_error.ts";
export type { ApiError, ApiErrorType } from "./serve/api_error.ts";
export type { ChatTurn } from "./serve/openai_schema.ts";
export {
  currentTelemetry,
  makeTelemetry,
  quietTelemetry,
  Telemetry,
  telemetryLayer,
  type TelemetryOptions,
  type TelemetryShape,
} from "./observe/telemetry.ts";
export {
  ChromeTrace,
  type TraceEvent,
  type TraceFile,
  type TraceOwner,
  writeChromeTrace,
} from "./observe/chrome_trace.ts";
export {
  LOG_LEVELS,
  logAsRank,
  type LogFormat,
  loggingLayer,
  logLevelFromEnv,
  type LogLevelName,
  parseLogLevel,
} from "./observe/logging.ts";
export { barProgress, lineProgress, type ProgressView } from "./observe/progress.ts";
export {
  LoadProgress,
  RankEvent,
  RankSpans,
  SpanCategory,
  TimelineSpan,
} from "./observe/rank_events.ts";
export {
  noTimeline,
  type RecordingTimeline,
  recordingTimeline,
  type Timeline,
  wallClockMillis,
  withSpan,
} from "./observe/timeline.ts";
