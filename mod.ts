/**
 * Tessera: tensor-parallel LLM inference for Deno on WebGPU.
 *
 * ```ts
 * import { Effect } from "effect";
 * import { InProcessTransport, Supervisor, tensor } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   yield* supervisor.load({ _tag: "ParallelMlp", name: "mlp", dim: 4, hidden: 8, activation: "gelu" }, [
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
export { Supervisor, type SupervisorOptions } from "./actors/supervisor.ts";
export { type InProcessOptions, InProcessTransport } from "./actors/inprocess.ts";
export { type WorkersOptions, WorkersTransport } from "./actors/workers.ts";
export { type TcpOptions, TcpTransport } from "./actors/tcp.ts";
export { type RankServerOptions, serveRank } from "./actors/rank_server.ts";
export { importSecret, loadSecret } from "./wire/handshake.ts";
export { SecretError, WireError } from "./wire/errors.ts";
export { type RankGroup, type RankHandle, Transport } from "./actors/transport.ts";
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
  ParallelMlpSpec,
  RankCommand,
  RankReply,
  RowParallelSpec,
} from "./actors/protocol.ts";
export { CollectiveError, RankDied } from "./collectives/errors.ts";
export { type Communicator, stepCommunicator } from "./collectives/communicator.ts";
export { InProcessGroup } from "./collectives/inprocess.ts";
export { CollectiveOp, Contribution, TensorPayload } from "./collectives/protocol.ts";
export {
  concat,
  type HostTensor,
  partRange,
  slice,
  splitSizes,
  tensor,
} from "./collectives/tensor.ts";
export { acquireGpu, type Backend, type Gpu } from "./gpu/device.ts";
export { DeviceLostError, GpuOperationError, NoAdapterError } from "./gpu/errors.ts";
export { ColumnParallelLinear, RowParallelLinear } from "./layers/linear.ts";
export { ParallelMlp } from "./layers/mlp.ts";
export { LlamaModel, type LoadLlamaError, type LoadLlamaOptions } from "./models/llama.ts";
export type { LlamaConfig, RopeLayout } from "./models/config.ts";
export { ConfigError, LoadError } from "./models/errors.ts";
export { planLlama, type RankPlan } from "./models/plan.ts";
export { openLlama2c } from "./models/llama2c.ts";
export { loadHuggingFaceTokenizer, openHuggingFace } from "./models/huggingface.ts";
export { loadLlama2cTokenizer, type TextTokenizer } from "./models/tokenizer.ts";
export { Sampler, type SamplerOptions } from "./models/sampler.ts";
export {
  generate,
  type GeneratedToken,
  type GenerateError,
  GenerateInputError,
  type GenerateOptions,
  loadTokenizer,
  modelSourceOf,
} from "./models/generate.ts";
export {
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
  RequestRejected,
} from "./engine/engine.ts";
export { type EngineOptions, makeInferenceEngine } from "./engine/scheduler.ts";
export { ChatTemplate, defaultChatTemplate, loadChatTemplate } from "./serve/chat_template.ts";
export { type RunningServer, type ServerOptions, startServer } from "./serve/server.ts";
