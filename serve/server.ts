/**
 * The service on `Deno.serve`. Deno has no `@effect/platform-deno`, so the app is turned into a
 * fetch handler with `HttpApp.toWebHandlerRuntime` over the current runtime (which carries the
 * engine, the chat template and the settings). Streams reach the socket as the engine produces
 * them: a streamed response body is a `ReadableStream` pulled by Deno, and a client that
 * disconnects aborts the request (interrupting a JSON request's fiber) or cancels the body
 * (interrupting an SSE stream); either way the engine stream is interrupted and its slot freed.
 * `Deno.serve` listens on loopback only, behind a connection guard on the public port that adds
 * the header and idle timeouts Deno has not got (connection_guard.ts).
 */
import { HttpApp } from "@effect/platform";
import { Context, Effect, Layer, Metric, type Scope } from "effect";
import { InferenceEngine } from "../engine/engine.ts";
import * as metrics from "../engine/metrics.ts";
import { makeAdminKeyCheck, makeApiKeyCheck } from "./auth.ts";
import { type ConnectionGuard, startConnectionGuard } from "./connection_guard.ts";
import type { ChatTemplate } from "./chat_template.ts";
import { app, ServeConfig } from "./routes.ts";

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** Interface to bind; default 127.0.0.1 (loopback only). */
  readonly hostname?: string;
  /** Port; 0 picks a free one (see `RunningServer.port`). Default 8000. */
  readonly port?: number;
  /** Require `Authorization: Bearer <apiKey>` on every route but /health. */
  readonly apiKey?: string;
  /**
   * Enables the fault-drill routes `POST /admin/ranks/{rank}/kill` and
   * `/admin/ranks/{rank}/pause?seconds=N`, behind `Authorization: Bearer <adminKey>`; without
   * it they are 404.
   */
  readonly adminKey?: string;
  /** An SSE stream with nothing sent for this long gets a `: keep-alive` comment; default 10 s. */
  readonly keepAliveMillis?: number;
  /** Most tokens a request may ask for; default min(1024, the context length). */
  readonly maxTokensLimit?: number;
  /** Largest request body in bytes; default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** From a request's first byte to its complete headers (else 408 and closed); default 10 s. */
  readonly headerTimeoutMillis?: number;
  /** For a request's whole body once its headers are in (else 408); default 30 s. */
  readonly bodyTimeoutMillis?: number;
  /** A connection with no request (new, or kept alive) is closed after this; default 60 s. */
  readonly idleTimeoutMillis?: number;
  /** Origins allowed cross-origin (CORS); default none: no CORS headers at all. */
  readonly allowedOrigins?: readonly string[];
}

/** A server that is listening. */
export interface RunningServer {
  /** The interface it is bound to. */
  readonly hostname: string;
  /** The port it is bound to (the actual one when 0 was asked for). */
  readonly port: number;
  /** `http://host:port`. */
  readonly url: string;
  /**
   * Stops accepting connections (the listener closes at once) and completes when the requests
   * in flight, streams included, have finished.
   */
  readonly shutdown: Effect.Effect<void>;
}

export const DEFAULT_MAX_TOKENS_LIMIT = 1024;
export const DEFAULT_MAX_BODY_BYTES = 1 << 20;
export const DEFAULT_HEADER_TIMEOUT_MILLIS = 10_000;
export const DEFAULT_BODY_TIMEOUT_MILLIS = 30_000;
export const DEFAULT_IDLE_TIMEOUT_MILLIS = 60_000;
/** After the real server shut down, time a connection gets to relay its last bytes. */
const CLOSE_GRACE_MILLIS = 2_000;
export const DEFAULT_KEEP_ALIVE_MILLIS = 10_000;

/** Registers the engine's untagged metrics, so /metrics lists them (at 0) before first use. */
const registerMetrics = Effect.all([
  Metric.value(metrics.promptTokens),
  Metric.value(metrics.generatedTokens),
  Metric.value(metrics.queueDepth),
  Metric.value(metrics.runningRequests),
  Metric.value(metrics.timeToFirstToken),
  Metric.value(metrics.batchSize),
  Metric.value(metrics.rankRestarts),
  Metric.value(metrics.engineStalls),
  Metric.value(metrics.failedReloads),
  Metric.value(metrics.restartTimeouts),
], { discard: true });

/**
 * Serves the engine over HTTP until the scope closes (which shuts the server down gracefully).
 * The listener is bound when this succeeds.
 *
 * @example An OpenAI-compatible server for stories260K on two Workers
 * ```ts
 * import { Effect } from "effect";
 * import {
 *   ChatTemplate,
 *   InferenceEngine,
 *   loadChatTemplate,
 *   makeInferenceEngine,
 *   startServer,
 *   WorkersTransport,
 * } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const engine = yield* makeInferenceEngine({
 *     modelPath: "stories260K.bin",
 *     tokenizerPath: "tok512.bin",
 *     tp: 2,
 *   });
 *   const template = yield* loadChatTemplate("stories260K.bin", "tok512.bin");
 *   const server = yield* startServer({ port: 8000 }).pipe(
 *     Effect.provideService(InferenceEngine, engine),
 *     Effect.provideService(ChatTemplate, template),
 *   );
 *   console.log(`listening on ${server.url}`);
 *   yield* Effect.never; // serve until interrupted
 * });
 * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(WorkersTransport())));
 * ```
 */
export const startServer = (
  options: ServerOptions = {},
): Effect.Effect<RunningServer, never, Scope.Scope | InferenceEngine | ChatTemplate> =>
  Effect.gen(function* () {
    const engine = yield* InferenceEngine;
    const maxTokensLimit = options.maxTokensLimit ??
      Math.min(DEFAULT_MAX_TOKENS_LIMIT, engine.contextLength);
    const settings = {
      maxTokensLimit,
      maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      bodyTimeoutMillis: options.bodyTimeoutMillis ?? DEFAULT_BODY_TIMEOUT_MILLIS,
      allowedOrigins: new Set(options.allowedOrigins ?? []),
      apiKeyCheck: options.apiKey === undefined
        ? undefined
        : yield* makeApiKeyCheck(options.apiKey),
      adminKeyCheck: options.adminKey === undefined
        ? undefined
        : yield* makeAdminKeyCheck(options.adminKey),
      keepAliveMillis: options.keepAliveMillis ?? DEFAULT_KEEP_ALIVE_MILLIS,
      startedAt: Math.floor(Date.now() / 1000),
    };
    yield* registerMetrics;
    const runtime = yield* Effect.runtime<InferenceEngine | ChatTemplate>();
    const handler = HttpApp.toWebHandlerRuntime(runtime)(
      Effect.provideService(app, ServeConfig, settings),
    );
    const hostname = options.hostname ?? "127.0.0.1";
    // The real server is on loopback behind the guard, which owns the public port and its
    // connection timeouts (see connection_guard.ts).
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
    }, (request, info) => guard.track(info.remoteAddr.port, () => handler(request)));
    let guard: ConnectionGuard;
    try {
      guard = startConnectionGuard({ hostname, port: options.port ?? 8000 }, server.addr.port, {
        headerMillis: options.headerTimeoutMillis ?? DEFAULT_HEADER_TIMEOUT_MILLIS,
        idleMillis: options.idleTimeoutMillis ?? DEFAULT_IDLE_TIMEOUT_MILLIS,
      });
    } catch (error) {
      yield* Effect.promise(() => server.shutdown());
      return yield* Effect.die(error); // the port is taken or not ours: as Deno.serve would
    }
    const shutdown = Effect.promise(async () => {
      guard.stopAccepting();
      await server.shutdown();
      await guard.closeAll(CLOSE_GRACE_MILLIS);
    });
    yield* Effect.addFinalizer(() => shutdown);
    const port = guard.port;
    const shownHost = hostname.includes(":") ? `[${hostname}]` : hostname;
    return { hostname, port, url: `http://${shownHost}:${port}`, shutdown };
  }).pipe(Effect.withSpan("serve.startServer"));

/**
 * Graceful stop for SIGTERM/SIGINT: stop accepting, let the engine finish what it has (at most
 * `drainMillis`; what is still running then fails with a retriable error its client sees), and
 * wait for the last responses to be written.
 */
export const shutdownGracefully = (server: RunningServer, drainMillis: number) =>
  Effect.gen(function* () {
    const engine = yield* InferenceEngine;
    const closed = yield* Effect.fork(server.shutdown);
    yield* engine.drain(drainMillis);
    // Responses end right after the engine's streams do; do not wait forever on a stuck socket.
    yield* closed.await.pipe(Effect.timeoutOption(5000));
  }).pipe(Effect.withSpan("serve.shutdownGracefully"));

/** The running server, for programs that build their services from layers. */
export class HttpService extends Context.Tag("tessera/HttpService")<HttpService, RunningServer>() {}

/** `startServer` as a Layer: serving while the layer's scope is open. */
export const HttpServiceLive = (options: ServerOptions = {}) =>
  Layer.scoped(HttpService, startServer(options));
