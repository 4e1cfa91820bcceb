/**
 * The one error the HTTP layer answers with, in OpenAI's shape:
 * `{"error": {"message", "type", "param", "code"}}` with the status OpenAI would use. Every
 * failure (a bad body, a full queue, a lost generation) is mapped to one of these before it
 * reaches the wire, so clients written for OpenAI handle them as they already do.
 */
import { HttpServerResponse } from "@effect/platform";
import { type Cause, Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "../util/tagged_error.ts";
import type { SubmitError } from "../engine/engine.ts";

/** OpenAI's error `type` values that this server uses. */
export type ApiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "rate_limit_error"
  | "server_error"
  | "service_unavailable";

/** An error in OpenAI's shape, with the HTTP status to answer it with. */
export interface ApiError extends Cause.YieldableError {
  /** Always `"ApiError"`. */
  readonly _tag: "ApiError";
  /** HTTP status. */
  readonly status: number;
  /** Human-readable description. */
  readonly message: string;
  /** OpenAI's error type. */
  readonly type: ApiErrorType;
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** OpenAI's error code, or null. */
  readonly code: string | null;
  /** Extra response headers, e.g. `Retry-After`. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** Makes a `ApiError` (a `Data.TaggedError`: yieldable, matched by `_tag`). */
export const ApiError: TaggedErrorClass<ApiError> = Data.TaggedError("ApiError")<
  ErrorFields<ApiError>
>;

/** The JSON body OpenAI sends with an error (also used for an SSE error event). */
export const errorBody = (error: ApiError) => ({
  error: { message: error.message, type: error.type, param: error.param, code: error.code },
});

export const errorResponse = (error: ApiError): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson(errorBody(error), {
    status: error.status,
    headers: error.headers,
  });

export const invalidRequest = (
  message: string,
  param: string | null = null,
  code: string | null = null,
) => new ApiError({ status: 400, message, type: "invalid_request_error", param, code });

/** How `engine.submit`'s refusals read over HTTP. */
export const submitErrorToApi = (error: SubmitError): ApiError => {
  switch (error._tag) {
    case "QueueFull":
      return new ApiError({
        status: 429,
        message: error.message,
        type: "rate_limit_error",
        param: null,
        code: "queue_full",
      });
    case "EngineUnavailable":
      return new ApiError({
        status: 503,
        message: error.message,
        type: "service_unavailable",
        param: null,
        code: null,
        headers: { "retry-after": String(Math.max(1, Math.ceil(error.retryAfterSeconds))) },
      });
    case "RequestRejected":
      return invalidRequest(error.message, error.param ?? null);
  }
};
