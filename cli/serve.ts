/**
 * `deno task serve`: the OpenAI-compatible HTTP service (serve/) over a model sharded on `--tp`
 * ranks.
 *
 *   deno task serve --model assets/stories260K.bin \
 *     --tokenizer assets/tok512.bin --tp 2 --port 8000
 *
 * Prints `listening on http://HOST:PORT` once the model is loaded and the port bound (with the
 * real port when `--port 0`). With `--admin-key` (or TESSERA_ADMIN_KEY) the fault drills
 * `POST /admin/ranks/{rank}/kill` and `/pause?seconds=N` are served behind that key. SIGTERM or SIGINT: stop accepting, drain the engine for at most
 * `--drain-seconds`, exit 0 (a second signal exits at once with 1).
 *
 * Failures print one line `error: ...` on stderr. Exit codes: 0 after a graceful shutdown, 1 a
 * failure while loading or serving, 2 a usage error.
 */
import { Deferred, Effect, Exit } from "effect";
import { InferenceEngine } from "../engine/engine.ts";
import { ChatTemplate, loadChatTemplate } from "../serve/chat_template.ts";
import {
  DEFAULT_BODY_TIMEOUT_MILLIS,
  DEFAULT_HEADER_TIMEOUT_MILLIS,
  DEFAULT_IDLE_TIMEOUT_MILLIS,
  DEFAULT_MAX_BODY_BYTES,
  shutdownGracefully,
  startServer,
} from "../serve/server.ts";
import {
  DEFAULT_RESTART_TIMEOUT_MILLIS,
  DEFAULT_STALL_MILLIS,
  makeInferenceEngine,
} from "../engine/scheduler.ts";
import { helpText, parseFlagTable, versionText } from "./flag_table.ts";
import {
  intIn,
  type ModelFlags,
  modelFlagsOf,
  modelFlagTable,
  usage,
  type UsageError,
} from "./flags.ts";
import { runMain } from "./main.ts";
import {
  type ObserveFlags,
  observeFlagsOf,
  observeFlagTable,
  withRanksObserved,
} from "./observe.ts";

const seconds = (millis: number) => String(millis / 1000);

const FLAGS = {
  ...modelFlagTable,
  host: { type: "string", value: "HOST", default: "127.0.0.1", help: "address to listen on" },
  port: { type: "string", value: "PORT", default: "8000", help: "port to listen on; 0 picks one" },
  "api-key": {
    type: "string",
    value: "KEY",
    help: "require `Authorization: Bearer KEY` on /v1",
    defaultNote: "env TESSERA_API_KEY, else no key",
  },
  "admin-key": {
    type: "string",
    value: "KEY",
    help: "serve the drills POST /admin/ranks/{rank}/kill and /pause, behind this bearer key",
    defaultNote: "env TESSERA_ADMIN_KEY, else no admin routes",
  },
  "stall-seconds": {
    type: "string",
    value: "S",
    default: seconds(DEFAULT_STALL_MILLIS),
    help: "with requests in flight and no step done for this long, restart the rank group",
  },
  "restart-timeout-seconds": {
    type: "string",
    value: "S",
    default: seconds(DEFAULT_RESTART_TIMEOUT_MILLIS),
    help: "requests waiting longer on a restarting rank group fail (503, retriable)",
  },
  "max-sequences": {
    type: "string",
    value: "N",
    default: "8",
    help: "sequences decoded together (KV-cache slots)",
  },
  "max-queue": {
    type: "string",
    value: "N",
    default: "64",
    help: "requests waiting for a slot before 429",
  },
  "max-tokens-limit": {
    type: "string",
    value: "N",
    help: "largest max_tokens a request may ask for",
    defaultNote: "the model's context",
  },
  "max-body-bytes": {
    type: "string",
    value: "BYTES",
    default: String(DEFAULT_MAX_BODY_BYTES),
    help: "largest request body before 413",
  },
  "drain-seconds": {
    type: "string",
    value: "S",
    default: "30",
    help: "on SIGTERM/SIGINT, time in-flight requests get to finish",
  },
  "header-timeout-seconds": {
    type: "string",
    value: "S",
    default: seconds(DEFAULT_HEADER_TIMEOUT_MILLIS),
    help: "time a client has to send its request headers",
  },
  "body-timeout-seconds": {
    type: "string",
    value: "S",
    default: seconds(DEFAULT_BODY_TIMEOUT_MILLIS),
    help: "time a client has to send its request body",
  },
  "idle-timeout-seconds": {
    type: "string",
    value: "S",
    default: seconds(DEFAULT_IDLE_TIMEOUT_MILLIS),
    help: "a kept-alive connection with no request is closed after this",
  },
  "allowed-origins": {
    type: "string",
    value: "LIST",
    default: "",
    help: "browser origins allowed by CORS, comma-separated",
    defaultNote: "none: no CORS headers",
  },
  "model-id": {
    type: "string",
    value: "NAME",
    help: "the model's id in /v1/models and responses",
    defaultNote: "the model's file or directory name",
  },
  ...observeFlagTable,
} as const;

const HELP = helpText(
  "deno task serve",
  "Serves an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions) over --tp ranks.",
  FLAGS,
);

interface ServeCliOptions extends ModelFlags, ObserveFlags {
  readonly host: string;
  readonly port: number;
  readonly apiKey?: string;
  readonly adminKey?: string;
  readonly stallSeconds: number;
  readonly restartTimeoutSeconds: number;
  readonly maxSequences: number;
  readonly maxQueue: number;
  readonly maxTokensLimit?: number;
  readonly maxBodyBytes: number;
  readonly drainSeconds: number;
  readonly headerTimeoutSeconds: number;
  readonly bodyTimeoutSeconds: number;
  readonly idleTimeoutSeconds: number;
  readonly allowedOrigins: readonly string[];
  readonly modelId?: string;
}

const parseCli = (
  args: string[],
): Effect.Effect<ServeCliOptions | "help" | "version", UsageError> =>
  Effect.gen(function* () {
    const parsed = yield* parseFlagTable(args, FLAGS);
    if (parsed._tag === "Help") return "help" as const;
    if (parsed._tag === "Version") return "version" as const;
    const { values } = parsed;
    const modelFlags = yield* modelFlagsOf(values, (tp) => intIn("tp", tp, 1));
    const apiKey = values["api-key"] ?? Deno.env.get("TESSERA_API_KEY");
    if (apiKey !== undefined && apiKey.trim() === "") {
      return yield* usage("--api-key (or TESSERA_API_KEY) must not be empty");
    }
    const adminKey = values["admin-key"] ?? Deno.env.get("TESSERA_ADMIN_KEY");
    if (adminKey !== undefined && adminKey.trim() === "") {
      return yield* usage("--admin-key (or TESSERA_ADMIN_KEY) must not be empty");
    }
    if (adminKey !== undefined && adminKey === apiKey) {
      // Every API client would hold the key that kills ranks.
      return yield* usage("--admin-key must differ from the API key");
    }
    if (values.host.trim() === "") return yield* usage("--host must not be empty");
    if (values["model-id"] !== undefined && values["model-id"].trim() === "") {
      return yield* usage("--model-id must not be empty");
    }
    const allowedOrigins = values["allowed-origins"].split(",").map((o) => o.trim())
      .filter((o) => o !== "");
    const badOrigin = allowedOrigins.find((o) => !/^https?:\/\/[^/\s]+$/.test(o));
    if (badOrigin !== undefined) {
      return yield* usage(
        `--allowed-origins: ${badOrigin} is not an origin like http://host:port (no path)`,
      );
    }
    return {
      ...modelFlags,
      ...yield* observeFlagsOf(values),
      host: values.host,
      port: yield* intIn("port", values.port, 0, 65535),
      apiKey,
      adminKey,
      // At most a day: beyond that a bound is no bound (and past setTimeout's range).
      stallSeconds: yield* intIn("stall-seconds", values["stall-seconds"], 1, 86_400),
      restartTimeoutSeconds: yield* intIn(
        "restart-timeout-seconds",
        values["restart-timeout-seconds"],
        1,
        86_400,
      ),
      maxSequences: yield* intIn("max-sequences", values["max-sequences"], 1),
      maxQueue: yield* intIn("max-queue", values["max-queue"], 0),
      maxTokensLimit: values["max-tokens-limit"] === undefined
        ? undefined
        : yield* intIn("max-tokens-limit", values["max-tokens-limit"], 1),
      maxBodyBytes: yield* intIn("max-body-bytes", values["max-body-bytes"], 1),
      drainSeconds: yield* intIn("drain-seconds", values["drain-seconds"], 0),
      headerTimeoutSeconds: yield* intIn(
        "header-timeout-seconds",
        values["header-timeout-seconds"],
        1,
      ),
      bodyTimeoutSeconds: yield* intIn("body-timeout-seconds", values["body-timeout-seconds"], 1),
      idleTimeoutSeconds: yield* intIn("idle-timeout-seconds", values["idle-timeout-seconds"], 1),
      allowedOrigins,
      modelId: values["model-id"],
    };
  });

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
      memory: options.memory,
      modelId: options.modelId,
      stallMillis: options.stallSeconds * 1000,
      restartTimeoutMillis: options.restartTimeoutSeconds * 1000,
    });
    const template = yield* loadChatTemplate(options.model, options.tokenizer);
    const serving = Effect.gen(function* () {
      const server = yield* startServer({
        hostname: options.host,
        port: options.port,
        apiKey: options.apiKey,
        adminKey: options.adminKey,
        maxTokensLimit: options.maxTokensLimit,
        maxBodyBytes: options.maxBodyBytes,
        headerTimeoutMillis: options.headerTimeoutSeconds * 1000,
        bodyTimeoutMillis: options.bodyTimeoutSeconds * 1000,
        idleTimeoutMillis: options.idleTimeoutSeconds * 1000,
        allowedOrigins: options.allowedOrigins,
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
  }).pipe(withRanksObserved(options));

await runMain(
  parseCli(Deno.args).pipe(
    Effect.flatMap((options) =>
      options === "help"
        ? Effect.sync(() => console.log(HELP.trimEnd()))
        : options === "version"
        ? Effect.sync(() => console.log(versionText().trimEnd()))
        : run(options)
    ),
  ),
);
