/**
 * The HTTP API: OpenAI's `/v1/completions`, `/v1/chat/completions` and `/v1/models`, plus
 * `/health`, `/metrics`, the status page `/` and its data `/status`, and, with an admin key,
 * the fault drills `POST /admin/ranks/{rank}/kill` and `/pause`, as one `@effect/platform`
 * app. Every failure leaves here as an
 * OpenAI-style JSON error (see api_error.ts); every answer is counted in
 * `tessera_http_requests_total{route,status}`.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform";
import { Cause, Context, Effect, Metric, Stream } from "effect";
import {
  type GenerationFailed,
  type GenerationRequest,
  InferenceEngine,
} from "../engine/engine.ts";
import { httpRequests } from "../engine/metrics.ts";
import {
  ApiError,
  errorBody,
  errorResponse,
  invalidRequest,
  submitErrorToApi,
} from "./api_error.ts";
import type { ApiKeyCheck } from "./auth.ts";
import { readJsonBody } from "./body.ts";
import { ChatTemplate, encodeRendered } from "./chat_template.ts";
import { checkPromptBytes, planRequest, runGeneration } from "./generation.ts";
import {
  chatShapes,
  completionShapes,
  newHeader,
  type ResponseShapes,
  usageOf,
} from "./openai_responses.ts";
import {
  decodeChatRequest,
  decodeCompletionRequest,
  type GenerationParams,
} from "./openai_schema.ts";
import { PROMETHEUS_CONTENT_TYPE, prometheusText } from "./prometheus.ts";
import { SSE_DONE, sseEvent, sseResponse, withKeepAlive } from "./sse.ts";
import { STATUS_PAGE_HTML } from "./status_page.ts";

/** The service's own limits (the engine has its own: slots, queue, context). */
export interface ServeSettings {
  /** Most tokens one request may ask for (`max_tokens`); also the default's cap. */
  readonly maxTokensLimit: number;
  /** Largest request body accepted, in bytes (413 above). */
  readonly maxBodyBytes: number;
  /** Time for a whole request body once the headers are in (408 after). */
  readonly bodyTimeoutMillis: number;
  /** Origins answered with CORS headers (and preflights); empty: no CORS. */
  readonly allowedOrigins: ReadonlySet<string>;
  /** When set, every route but /health (and the admin routes) needs `Authorization: Bearer <key>`. */
  readonly apiKeyCheck?: ApiKeyCheck;
  /** When set, the admin routes exist and need `Authorization: Bearer <admin key>`. */
  readonly adminKeyCheck?: ApiKeyCheck;
  /** An SSE stream quiet for this long gets a `: keep-alive` comment. */
  readonly keepAliveMillis: number;
  /** `created` of the model object in /v1/models (seconds). */
  readonly startedAt: number;
}

export class ServeConfig extends Context.Tag("tessera/ServeConfig")<ServeConfig, ServeSettings>() {}

/** Routes by path, with their methods: the router's table, and the 404/405 decision. */
const ROUTES = [
  { method: "POST", path: "/v1/completions" },
  { method: "POST", path: "/v1/chat/completions" },
  { method: "GET", path: "/v1/models" },
  { method: "GET", path: "/v1/models/:model" },
  { method: "GET", path: "/health" },
  { method: "GET", path: "/metrics" },
  { method: "GET", path: "/" },
  { method: "GET", path: "/status" },
  { method: "POST", path: "/admin/ranks/:rank/kill" },
  { method: "POST", path: "/admin/ranks/:rank/pause" },
] as const;

/** Routes that exist only when the server has an admin key, and check that key instead. */
const isAdminPath = (path: string) => path.startsWith("/admin/");

/** Open without the API key: the health check, and the status page (it holds no data itself). */
const OPEN_PATHS: ReadonlySet<string> = new Set(["/health", "/"]);

/** The route pattern a path belongs to (its metrics label), if any: `:name` is one segment. */
const routeOf = (path: string): string | undefined => {
  const segments = path.split("/");
  return ROUTES.find((r) => {
    const pattern = r.path.split("/");
    return pattern.length === segments.length &&
      pattern.every((p, i) => p.startsWith(":") ? segments[i] !== "" : p === segments[i]);
  })?.path;
};

const pathOf = (request: HttpServerRequest.HttpServerRequest) => {
  const url = request.url;
  const query = url.indexOf("?");
  return query === -1 ? url : url.slice(0, query);
};

const modelNotFound = (model: string) =>
  new ApiError({
    status: 404,
    message: `The model \`${model}\` does not exist or you do not have access to it.`,
    type: "invalid_request_error",
    param: "model",
    code: "model_not_found",
  });

const checkModel = (model: string) =>
  Effect.flatMap(
    InferenceEngine,
    (engine) => model === engine.modelId ? Effect.void : Effect.fail(modelNotFound(model)),
  );

/** A generation the engine lost: retriable ones as 503 with Retry-After, others as 500. */
const generationFailedToApi = (error: GenerationFailed) =>
  error.retriable
    ? new ApiError({
      status: 503,
      message: `${error.message}; retry the request`,
      type: "service_unavailable",
      param: null,
      code: "generation_failed",
      headers: { "retry-after": String(Math.max(1, Math.ceil(error.retryAfterSeconds ?? 1))) },
    })
    : new ApiError({
      status: 500,
      message: error.message,
      type: "server_error",
      param: null,
      code: "generation_failed",
    });

/** Runs a planned request and answers in the endpoint's shapes, as JSON or as SSE. */
const respond = (
  kind: "completion" | "chat",
  shapes: ResponseShapes,
  params: GenerationParams,
  request: GenerationRequest,
) =>
  Effect.gen(function* () {
    const engine = yield* InferenceEngine;
    const config = yield* ServeConfig;
    // Submitted before any byte is sent, so a full queue is still a 429, not a broken stream.
    const events = yield* runGeneration(request, params.stop);
    const header = newHeader(kind, engine.modelId);
    if (!params.stream) {
      // runGeneration always ends with exactly one Finished event.
      const all = yield* Stream.runCollect(events).pipe(Effect.mapError(generationFailedToApi));
      let text = "";
      for (const event of all) {
        if (event._tag === "Text") text += event.text;
        else {
          return HttpServerResponse.unsafeJson(shapes.complete(
            header,
            text,
            event.finishReason,
            usageOf(event.promptTokens, event.completionTokens),
          ));
        }
      }
      return yield* Effect.die(new Error("the generation ended without a finish event"));
    }
    const withUsage = params.includeUsage;
    const chunks = events.pipe(
      Stream.mapConcat((event) =>
        event._tag === "Text" ? [shapes.delta(header, event.text, withUsage)] : [
          shapes.closing(header, event.finishReason, withUsage),
          ...(withUsage
            ? [shapes.usage(header, usageOf(event.promptTokens, event.completionTokens))]
            : []),
        ]
      ),
    );
    const body = Stream.fromIterable(shapes.opening(header, withUsage)).pipe(
      Stream.concat(chunks),
      Stream.map(sseEvent),
      Stream.concat(Stream.make(SSE_DONE)),
      // OpenAI's way to fail a stream that has started: an error event, then the end.
      Stream.catchAll((failed) => Stream.make(sseEvent(errorBody(generationFailedToApi(failed))))),
    );
    return sseResponse(withKeepAlive(body, config.keepAliveMillis));
  });

const completions = Effect.gen(function* () {
  const config = yield* ServeConfig;
  const engine = yield* InferenceEngine;
  const input = yield* Effect.flatMap(readJsonBody(config), decodeCompletionRequest);
  yield* checkModel(input.model);
  const prompt = yield* checkPromptBytes(input.prompt, engine.contextLength, "prompt");
  const promptTokens = engine.tokenizer.encode(prompt, {
    bos: engine.tokenizer.addsBos,
    eos: false,
  });
  const request = yield* planRequest(input, promptTokens, {
    contextLength: engine.contextLength,
    maxTokensLimit: config.maxTokensLimit,
  }, "prompt");
  return yield* respond("completion", completionShapes, input, request);
}).pipe(Effect.withSpan("serve.completions"));

const chatCompletions = Effect.gen(function* () {
  const config = yield* ServeConfig;
  const engine = yield* InferenceEngine;
  const template = yield* ChatTemplate;
  const input = yield* Effect.flatMap(readJsonBody(config), decodeChatRequest);
  yield* checkModel(input.model);
  const rendered = yield* template.render(input.messages);
  yield* checkPromptBytes(rendered.text, engine.contextLength, "messages");
  const request = yield* planRequest(input, encodeRendered(engine.tokenizer, rendered), {
    contextLength: engine.contextLength,
    maxTokensLimit: config.maxTokensLimit,
  }, "messages");
  return yield* respond("chat", chatShapes, input, request);
}).pipe(Effect.withSpan("serve.chatCompletions"));

const modelObject = Effect.gen(function* () {
  const engine = yield* InferenceEngine;
  const config = yield* ServeConfig;
  return { id: engine.modelId, object: "model", created: config.startedAt, owned_by: "tessera" };
});

const listModels = Effect.map(
  modelObject,
  (model) => HttpServerResponse.unsafeJson({ object: "list", data: [model] }),
);

/** A path segment's text; one with a malformed %-escape stays as it came. */
const decodedSegment = (segment: string): string => {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
};

const retrieveModel = Effect.gen(function* () {
  const { model } = yield* HttpRouter.params;
  const object = yield* modelObject;
  const id = decodedSegment(model ?? "");
  if (id !== object.id) return yield* modelNotFound(id);
  return HttpServerResponse.unsafeJson(object);
});

/** 200 only when the engine is ready; otherwise 503 with the same body, for load balancers. */
const health = Effect.gen(function* () {
  const engine = yield* InferenceEngine;
  const state = yield* engine.health;
  const ready = state.state === "ready";
  return HttpServerResponse.unsafeJson({
    status: ready ? "ok" : "unavailable",
    state: state.state,
    model: engine.modelId,
    ranks: state.ranks,
    restarts: state.restarts,
    stalls: state.stalls,
    waiting: state.waiting,
    running: state.running,
  }, { status: ready ? 200 : 503 });
});

/** The status page's data: the engine's health with memory, throughput and restarts. */
const status = Effect.gen(function* () {
  const engine = yield* InferenceEngine;
  const state = yield* engine.health;
  return HttpServerResponse.unsafeJson({ model: engine.modelId, ...state });
});

const statusPage = Effect.succeed(
  HttpServerResponse.html(STATUS_PAGE_HTML).pipe(
    HttpServerResponse.setHeader("cache-control", "no-store"),
  ),
);

const metrics = Effect.map(
  prometheusText,
  (text) => HttpServerResponse.text(text, { contentType: PROMETHEUS_CONTENT_TYPE }),
);

/** The `{rank}` of an admin path: a whole number (the engine checks it is one of its ranks). */
const rankParam = Effect.gen(function* () {
  const { rank } = yield* HttpRouter.params;
  const text = decodedSegment(rank ?? "");
  if (!/^\d{1,6}$/.test(text)) {
    return yield* invalidRequest(`'${text}' is not a rank: ranks are numbered from 0.`, "rank");
  }
  return Number(text);
});

/** Most seconds a pause drill may last (the rank protocol's bound). */
const MAX_PAUSE_SECONDS = 600;

const pauseSeconds = Effect.gen(function* () {
  const request = yield* HttpServerRequest.HttpServerRequest;
  const query = request.url.indexOf("?");
  const given = new URLSearchParams(query === -1 ? "" : request.url.slice(query + 1))
    .get("seconds");
  const seconds = given !== null && /^\d+(\.\d+)?$/.test(given) ? Number(given) : NaN;
  if (!(seconds >= 0.001 && seconds <= MAX_PAUSE_SECONDS)) {
    return yield* invalidRequest(
      `A pause needs ?seconds=N with N from 0.001 to ${MAX_PAUSE_SECONDS}` +
        (given === null ? "." : `, not '${given}'.`),
      "seconds",
    );
  }
  return seconds;
});

const drillAccepted = (body: Record<string, unknown>) =>
  HttpServerResponse.unsafeJson(body, { status: 202 });

/** Fault drill: the rank is stopped as a crash would stop it; the engine restarts the group. */
const killRankRoute = Effect.gen(function* () {
  const engine = yield* InferenceEngine;
  const rank = yield* rankParam;
  yield* engine.killRank(rank).pipe(Effect.mapError(submitErrorToApi));
  return drillAccepted({ action: "kill", rank });
}).pipe(Effect.withSpan("serve.admin.kill"));

/** Fault drill: the rank idles, alive; with work in flight the stall watchdog must notice. */
const pauseRankRoute = Effect.gen(function* () {
  const engine = yield* InferenceEngine;
  const rank = yield* rankParam;
  const seconds = yield* pauseSeconds;
  yield* engine.pauseRank(rank, Math.round(seconds * 1000)).pipe(
    Effect.mapError(submitErrorToApi),
  );
  return drillAccepted({ action: "pause", rank, seconds });
}).pipe(Effect.withSpan("serve.admin.pause"));

const router = HttpRouter.empty.pipe(
  HttpRouter.post("/v1/completions", completions),
  HttpRouter.post("/v1/chat/completions", chatCompletions),
  HttpRouter.get("/v1/models", listModels),
  HttpRouter.get("/v1/models/:model", retrieveModel),
  HttpRouter.get("/health", health),
  HttpRouter.get("/metrics", metrics),
  HttpRouter.get("/", statusPage),
  HttpRouter.get("/status", status),
  HttpRouter.post("/admin/ranks/:rank/kill", killRankRoute),
  HttpRouter.post("/admin/ranks/:rank/pause", pauseRankRoute),
);

/**
 * A path we serve with another method is a 405 naming the allowed ones; others are 404. A path
 * of a route that has the method but that the router could not match (a malformed %-escape in
 * a model id) is a 404 too: the model does not exist.
 */
const routeNotFound = (request: HttpServerRequest.HttpServerRequest, adminEnabled: boolean) => {
  const path = pathOf(request);
  const route = adminEnabled || !isAdminPath(path) ? routeOf(path) : undefined;
  const allowed = allowedMethods(route);
  if (route === "/v1/models/:model" && allowed.includes(request.method)) {
    return modelNotFound(decodedSegment(path.slice("/v1/models/".length)));
  }
  return allowed.length > 0 && !allowed.includes(request.method)
    ? new ApiError({
      status: 405,
      message: `${request.method} is not allowed on ${route}; use ${allowed.join(", ")}.`,
      type: "invalid_request_error",
      param: null,
      code: "method_not_allowed",
      headers: { allow: allowed.join(", ") },
    })
    : new ApiError({
      status: 404,
      message: `Unknown request URL: ${request.method} ${path}.`,
      type: "invalid_request_error",
      param: null,
      code: "unknown_url",
    });
};

const allowedMethods = (route: string | undefined): string[] =>
  ROUTES.filter((r) => r.path === route).map((r) => r.method);

/** How long a browser may keep a preflight's answer. */
const PREFLIGHT_MAX_AGE_SECONDS = 600;

/**
 * A CORS preflight from an allowed origin: 204 with the route's methods and the headers asked
 * for (the API key travels in `Authorization`), answered before the key check as browsers
 * send no credentials on a preflight. The admin routes are not for browsers: no preflight.
 */
const preflight = (request: HttpServerRequest.HttpServerRequest) => {
  const path = pathOf(request);
  const allowed = isAdminPath(path) ? [] : allowedMethods(routeOf(path));
  if (allowed.length === 0) return errorResponse(routeNotFound(request, false));
  return HttpServerResponse.empty({
    status: 204,
    headers: {
      "access-control-allow-methods": allowed.join(", "),
      "access-control-allow-headers": request.headers["access-control-request-headers"] ??
        "authorization, content-type",
      "access-control-max-age": String(PREFLIGHT_MAX_AGE_SECONDS),
    },
  });
};

const internalError = new ApiError({
  status: 500,
  message: "The server had an error while processing your request.",
  type: "server_error",
  param: null,
  code: null,
});

/**
 * The whole app: CORS for `allowedOrigins` (none by default), the API key check (all routes but
 * /health and the status page), the router, every error as OpenAI's JSON, and the request
 * counter.
 */
export const app = Effect.gen(function* () {
  const request = yield* HttpServerRequest.HttpServerRequest;
  const config = yield* ServeConfig;
  const path = pathOf(request);
  const origin = request.headers["origin"];
  const corsOrigin = origin !== undefined && config.allowedOrigins.has(origin) ? origin : undefined;
  const answer = yield* Effect.gen(function* () {
    if (
      corsOrigin !== undefined && request.method === "OPTIONS" &&
      request.headers["access-control-request-method"] !== undefined
    ) return preflight(request);
    if (isAdminPath(path)) {
      // Without an admin key the admin routes do not exist; with one, it is their only key.
      if (config.adminKeyCheck === undefined) {
        return errorResponse(routeNotFound(request, false));
      }
      yield* config.adminKeyCheck(request.headers["authorization"]);
    } else if (config.apiKeyCheck !== undefined && !OPEN_PATHS.has(path)) {
      yield* config.apiKeyCheck(request.headers["authorization"]);
    }
    return yield* router;
  }).pipe(
    Effect.catchTags({
      RouteNotFound: () =>
        Effect.succeed(errorResponse(routeNotFound(request, config.adminKeyCheck !== undefined))),
      ApiError: (error) => Effect.succeed(errorResponse(error)),
    }),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.as(
        Effect.logError("request failed", cause),
        errorResponse(internalError),
      )
    ),
  );
  // Only an allowed origin is named; it varies by Origin, so caches keep one answer per origin.
  const response = corsOrigin === undefined ? answer : answer.pipe(
    HttpServerResponse.setHeaders({
      "access-control-allow-origin": corsOrigin,
      "access-control-expose-headers": "retry-after",
      vary: "Origin",
    }),
  );
  yield* Metric.increment(
    Metric.tagged(
      Metric.tagged(httpRequests, "route", routeOf(path) ?? "unmatched"),
      "status",
      String(response.status),
    ),
  );
  return response;
});
