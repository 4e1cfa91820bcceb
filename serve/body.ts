/**
 * The JSON body of a request, read with a size bound. The bound is enforced on the bytes as
 * they arrive, not only on `Content-Length` (which a chunked request does not send and a
 * client may understate): the read stops at the first byte over it with a 413.
 */
import { HttpServerRequest } from "@effect/platform";
import { Effect, Stream } from "effect";
import { ApiError, invalidRequest } from "./api_error.ts";

const tooLarge = (maxBytes: number) =>
  new ApiError({
    status: 413,
    message: `The request body is larger than this server's limit of ${maxBytes} bytes.`,
    type: "invalid_request_error",
    param: null,
    code: "request_too_large",
  });

const notJson = invalidRequest(
  "We could not parse the JSON body of your request. The API expects a JSON payload " +
    "(Content-Type: application/json).",
);

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

/** The body parsed as JSON (only parsed: nothing in it is ever evaluated). */
export const readJsonBody = (
  maxBytes: number,
): Effect.Effect<unknown, ApiError, HttpServerRequest.HttpServerRequest> =>
  Effect.flatMap(readBoundedBody(maxBytes), (bytes) =>
    Effect.try({
      try: () => JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown,
      catch: () => notJson,
    }));
