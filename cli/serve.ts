/**
 * `deno task serve`: the OpenAI-compatible HTTP service (serve/) over a model sharded on `--tp`
 * ranks.
 *
 *   deno task serve --model ../shared/models/stories260K.bin \
 *     --tokenizer ../shared/models/tok512.bin --tp 2 --port 8000
 *
 * Prints `listening on http://HOST:PORT` once the model is loaded and the port bound (with the
 * real port when `--port 0`). SIGTERM or SIGINT: stop accepting, drain the engine for at most
 * `--drain-seconds`, exit 0 (a second signal exits at once with 1).
 *
 * Failures print one line `error: ...` on stderr. Exit codes: 0 after a graceful shutdown, 1 a
 * failure while loading or serving, 2 a usage error.
 */
import { parseArgs } from "node:util";
import { Cause, Data, Deferred, Effect, Exit, Layer, Option } from "effect";
import { InProcessTransport } from "../actors/inprocess.ts";
import { TcpTransport } from "../actors/tcp.ts";
import type { Transport } from "../actors/transport.ts";
import { WorkersTransport } from "../actors/workers.ts";
import { InferenceEngine } from "../engine/engine.ts";
import { ChatTemplate, loadChatTemplate } from "../serve/chat_template.ts";
import { DEFAULT_MAX_BODY_BYTES, shutdownGracefully, startServer } from "../serve/server.ts";
import { makeInferenceEngine } from "../engine/scheduler.ts";
import type { SecretError } from "../wire/errors.ts";
import { loadSecret } from "../wire/handshake.ts";

const USAGE = "usage: deno task serve --model PATH [--tokenizer PATH] [--tp N] " +
  "[--transport inprocess|workers|tcp] [--ranks HOST:PORT,...] [--secret-file F] " +
  "[--port 8000] [--host 127.0.0.1] [--api-key K | env TESSERA_API_KEY] [--max-sequences 8] " +
  "[--max-queue 64] [--max-tokens-limit N] [--max-body-bytes B] [--drain-seconds 30] " +
  "[--model-id NAME] [--weights f32|f16]";

/** A flag the CLI cannot accept; exit code 2. */
class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

type TransportName = "inprocess" | "workers" | "tcp";

interface ServeCliOptions {
  readonly model: string;
  readonly tokenizer?: string;
  readonly tp: number;
  readonly transport: TransportName;
  /** Element type of the matmul weights on the devices. */
  readonly weights: "f32" | "f16";
  readonly ranks?: readonly string[];
  readonly secretFile?: string;
  readonly host: string;
  readonly port: number;
  readonly apiKey?: string;
  readonly maxSequences: number;
  readonly maxQueue: number;
  readonly maxTokensLimit?: number;
  readonly maxBodyBytes: number;
  readonly drainSeconds: number;
  readonly modelId?: string;
}

const usage = (message: string) => Effect.fail(new UsageError({ message }));

const weightsOf = (value: string) =>
  value === "f32" || value === "f16"
    ? Effect.succeed<"f32" | "f16">(value)
    : usage(`--weights must be f32 or f16, got ${JSON.stringify(value)}`);

/** An integer flag within [min, max]. */
const intIn = (flag: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  /^\d+$/.test(value) && Number(value) >= min && Number(value) <= max
    ? Effect.succeed(Number(value))
    : usage(
      `--${flag} must be an integer ${
        max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`
      }, got ${JSON.stringify(value)}`,
    );

const parseCli = (args: string[]): Effect.Effect<ServeCliOptions | "help", UsageError> =>
  Effect.gen(function* () {
    const { values } = yield* Effect.try({
      try: () =>
        parseArgs({
          args,
          strict: true,
          allowPositionals: false,
          options: {
            model: { type: "string" },
            tokenizer: { type: "string" },
            tp: { type: "string", default: "1" },
            transport: { type: "string" },
            weights: { type: "string", default: "f32" },
            ranks: { type: "string" },
            "secret-file": { type: "string" },
            host: { type: "string", default: "127.0.0.1" },
            port: { type: "string", default: "8000" },
            "api-key": { type: "string" },
            "max-sequences": { type: "string", default: "8" },
            "max-queue": { type: "string", default: "64" },
            "max-tokens-limit": { type: "string" },
            "max-body-bytes": { type: "string", default: String(DEFAULT_MAX_BODY_BYTES) },
            "drain-seconds": { type: "string", default: "30" },
            "model-id": { type: "string" },
            help: { type: "boolean", short: "h", default: false },
          },
        }),
      catch: (e) => new UsageError({ message: e instanceof Error ? e.message : String(e) }),
    });
    if (values.help) return "help" as const;
    if (values.model === undefined) return yield* usage("--model PATH is required");
    const tp = yield* intIn("tp", values.tp, 1);
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
    const apiKey = values["api-key"] ?? Deno.env.get("TESSERA_API_KEY");
    if (apiKey !== undefined && apiKey.trim() === "") {
      return yield* usage("--api-key (or TESSERA_API_KEY) must not be empty");
    }
    if (values.host.trim() === "") return yield* usage("--host must not be empty");
    if (values["model-id"] !== undefined && values["model-id"].trim() === "") {
      return yield* usage("--model-id must not be empty");
    }
    return {
      model: values.model,
      tokenizer: values.tokenizer,
      tp,
      transport,
      weights: yield* weightsOf(values.weights),
      ranks,
      secretFile: values["secret-file"],
      host: values.host,
      port: yield* intIn("port", values.port, 0, 65535),
      apiKey,
      maxSequences: yield* intIn("max-sequences", values["max-sequences"], 1),
      maxQueue: yield* intIn("max-queue", values["max-queue"], 0),
      maxTokensLimit: values["max-tokens-limit"] === undefined
        ? undefined
        : yield* intIn("max-tokens-limit", values["max-tokens-limit"], 1),
      maxBodyBytes: yield* intIn("max-body-bytes", values["max-body-bytes"], 1),
      drainSeconds: yield* intIn("drain-seconds", values["drain-seconds"], 0),
      modelId: values["model-id"],
    };
  });

/** As in `deno task generate`: Workers by default at tp > 1, rank processes for tcp. */
const transportLayer = (options: ServeCliOptions): Layer.Layer<Transport, SecretError> => {
  switch (options.transport) {
    case "workers":
      return WorkersTransport();
    case "tcp":
      return options.secretFile === undefined ? TcpTransport() : Layer.unwrapEffect(
        Effect.map(
          loadSecret(options.secretFile),
          (key) => TcpTransport({ ranks: options.ranks, key }),
        ),
      );
    case "inprocess":
      return InProcessTransport();
  }
};

/**
 * Listens for SIGTERM and SIGINT from now on (so one that comes while the model loads is not
 * lost) and gives an Effect that completes with the first; a second signal (an impatient
 * operator) exits at once with 1. The listeners stay for the life of the process.
 */
const listenForSignals = Effect.gen(function* () {
  const first = yield* Deferred.make<Deno.Signal>();
  let received = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      if (received) Deno.exit(1);
      received = true;
      Deferred.unsafeDone(first, Exit.succeed(signal));
    });
  }
  return Deferred.await(first);
});

const run = (options: ServeCliOptions) =>
  Effect.gen(function* () {
    const firstSignal = yield* listenForSignals;
    const engine = yield* makeInferenceEngine({
      modelPath: options.model,
      tokenizerPath: options.tokenizer,
      tp: options.tp,
      maxSequences: options.maxSequences,
      maxQueue: options.maxQueue,
      weights: options.weights,
      modelId: options.modelId,
    });
    const template = yield* loadChatTemplate(options.model, options.tokenizer);
    const serving = Effect.gen(function* () {
      const server = yield* startServer({
        hostname: options.host,
        port: options.port,
        apiKey: options.apiKey,
        maxTokensLimit: options.maxTokensLimit,
        maxBodyBytes: options.maxBodyBytes,
      });
      console.log(`listening on ${server.url}`);
      const signal = yield* firstSignal;
      console.error(
        `${signal}: no new connections; draining for at most ${options.drainSeconds} s`,
      );
      yield* shutdownGracefully(server, options.drainSeconds * 1000);
    });
    yield* serving.pipe(
      Effect.scoped,
      Effect.provideService(InferenceEngine, engine),
      Effect.provideService(ChatTemplate, template),
    );
  }).pipe(Effect.scoped, Effect.provide(transportLayer(options)));

const oneLine = (message: string) => message.replace(/\s*\n\s*/g, " ");

/** One line for any failure: typed errors by their message, defects by theirs. */
const describe = (cause: Cause.Cause<{ readonly _tag: string; readonly message: string }>) => {
  const failure = Cause.failureOption(cause);
  if (Option.isSome(failure)) {
    const hint = failure.value._tag === "UsageError" ? " (see --help)" : "";
    return `error: ${oneLine(failure.value.message)}${hint}`;
  }
  if (Cause.isInterruptedOnly(cause)) return "error: interrupted";
  const defect = Cause.squash(cause);
  return `error: ${oneLine(defect instanceof Error ? defect.message : String(defect))}`;
};

const exit = await Effect.runPromiseExit(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) =>
      options === "help" ? Effect.sync(() => console.log(USAGE)) : run(options)
    ),
  ),
);
if (Exit.isSuccess(exit)) Deno.exit(0);
console.error(describe(exit.cause));
const isUsage = Option.exists(Cause.failureOption(exit.cause), (e) => e._tag === "UsageError");
Deno.exit(isUsage ? 2 : 1);
