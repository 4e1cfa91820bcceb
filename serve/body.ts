/**
 * The JSON body of a request, read with a size bound and a time bound, and parsed with a depth
 * bound. The size bound is enforced on the bytes as they arrive, not only on `Content-Length`
 * (which a chunked request does not send and a client may understate): the read stops at the
 * first byte over it with a 413. A body still arriving after the time bound is a 408 (the
 * connection is then closed), and JSON nested deeper than {@link MAX_JSON_DEPTH} is a 400
 * before it is parsed (deep values overflow the stack of whatever walks them later).
 */
import { HttpServerRequest } from "@effect/platform";
import { Duration, Effect, Stream } from "effect";
import { ApiError, invalidRequest } from "./api_error.ts";

/** Deepest nesting of arrays and objects a request body may have. */
export const MAX_JSON_DEPTH = 64;

const tooLarge = (maxBytes: number) =>
  new ApiError({
    status: 413,
    message: `The request body is larger than this server's limit of ${maxBytes} bytes.`,
    type: "invalid_request_error",
    param: null,
    code: "request_too_large",
  });

const tooSlow = (millis: number) =>
  new ApiError({
    status: 408,
    message: `The request body did not arrive within this server's limit of ${millis / 1000} s.`,
    type: "invalid_request_error",
    param: null,
    code: "request_timeout",
    headers: { connection: "close" },
  });

const notJson = invalidRequest(
  "We could not parse the JSON body of your request. The API expects a JSON payload " +
    "(Content-Type: application/json).",
);

const tooDeep = invalidRequest(
  `The JSON body of your request is nested more than ${MAX_JSON_DEPTH} levels deep.`,
);

const unsupportedType = (contentType: string) =>
  new ApiError({
    status: 415,
    message: `Content-Type ${contentType} is not supported; send application/json.`,
    type: "invalid_request_error",
    param: null,
    code: "unsupported_media_type",
  });

/** application/json, or any `+json` type, with or without parameters (charset). */
const isJsonType = (contentType: string) => {
  const type = contentType.split(";")[0].trim().toLowerCase();
  return type === "application/json" || /^application\/[a-z0-9.+-]*\+json$/.test(type);
};

/** The limits a body is read with. */
export interface BodyLimits {
  /** Largest body in bytes (413 above). */
  readonly maxBodyBytes: number;
  /** Time for the whole body (408 after). */
  readonly bodyTimeoutMillis: number;
}

/** The raw body, at most `maxBytes`. */
export const readBoundedBody = (
  maxBytes: number,
): Effect.Effect<Uint8Array, ApiError, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest;
    const declared = Number(request.headers["content-length"]);
    if (Number.isFinite(declared) && declared > maxBytes) return yield* tooLarge(maxBytes);
    const source = request.source as Request;
    if (source.body === null) return new Uint8Array(0);
    const chunks: Uint8Array[] = [];
    let size = 0;
    yield* request.stream.pipe(
      Stream.mapError(() => invalidRequest("The request body could not be read.")),
      Stream.runForEach((chunk) => {
        size += chunk.length;
        if (size > maxBytes) return Effect.fail(tooLarge(maxBytes));
        chunks.push(chunk);
        return Effect.void;
      }),
    );
    const body = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      body.set(chunk, at);
      at += chunk.length;
    }
    return body;
  });

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth`: one pass over the text,
 * brackets inside strings skipped, so the check itself cannot overflow.
 */
export const nestsDeeperThan = (text: string, maxDepth: number): boolean => {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
};

/**
 * The body parsed as JSON (only parsed: nothing in it is ever evaluated). A Content-Type other
 * than JSON is a 415; none at all is read as JSON.
 */
export const readJsonBody = (
  limits: BodyLimits,
): Effect.Effect<unknown, ApiError, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest;
    const contentType = request.headers["content-type"];
    if (contentType !== undefined && !isJsonType(contentType)) {
      return yield* unsupportedType(contentType);
    }
    const bytes = yield* readBoundedBody(limits.maxBodyBytes).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(limits.bodyTimeoutMillis),
        onTimeout: () => tooSlow(limits.bodyTimeoutMillis),
      }),
    );
    const text = yield* Effect.try({
      try: () => new TextDecoder("utf-8", { fatal: true }).decode(bytes),
      catch: () => notJson,
    });
    if (nestsDeeperThan(text, MAX_JSON_DEPTH)) return yield* tooDeep;
    return yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: () => notJson });
  });
