/**
 * OpenAI's request bodies for `/v1/completions` and `/v1/chat/completions` as Effect Schemas,
 * and their decoding into what the service runs. A body that does not decode becomes a 400 in
 * OpenAI's shape naming the field (`param`); fields OpenAI has but this server does not use
 * (`user`, `logit_bias`, `frequency_penalty`, …) are ignored, as OpenAI ignores unknown ones.
 */
import { Either, ParseResult, Schema } from "effect";
import { type ApiError, invalidRequest } from "./api_error.ts";

/** OpenAI accepts `null` for every optional field, meaning "absent". */
const optionalNullable = <S extends Schema.Schema.Any>(schema: S) =>
  Schema.optional(Schema.NullOr(schema));

const PositiveInt = Schema.Int.pipe(Schema.greaterThanOrEqualTo(1));

/** Sampling and streaming fields shared by both endpoints. */
const commonFields = {
  model: Schema.String,
  max_tokens: optionalNullable(PositiveInt),
  temperature: optionalNullable(Schema.Number.pipe(Schema.between(0, 2))),
  top_p: optionalNullable(Schema.Number.pipe(Schema.between(0, 1))),
  /** run.c's xorshift seed must not be 0; JSON numbers beyond 2^53 are not exact. */
  seed: optionalNullable(Schema.Int.pipe(Schema.between(1, Number.MAX_SAFE_INTEGER))),
  stream: optionalNullable(Schema.Boolean),
  stream_options: optionalNullable(Schema.Struct({
    include_usage: optionalNullable(Schema.Boolean),
  })),
  stop: optionalNullable(
    Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.maxItems(4))),
  ),
  n: optionalNullable(Schema.Int),
};

export const CompletionRequestBody = Schema.Struct({
  ...commonFields,
  /** One prompt: a string, or an array holding exactly one string. */
  prompt: Schema.Union(Schema.String, Schema.Tuple(Schema.String)),
});

const TextPart = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String });

export const ChatMessage = Schema.Struct({
  role: Schema.Literal("system", "user", "assistant"),
  content: Schema.Union(Schema.String, Schema.Array(TextPart)),
});

export const ChatCompletionRequestBody = Schema.Struct({
  ...commonFields,
  messages: Schema.Array(ChatMessage).pipe(Schema.minItems(1)),
  /** The chat endpoint's newer name for max_tokens; it wins when both are given. */
  max_completion_tokens: optionalNullable(PositiveInt),
});

/** What both endpoints run, once decoded. */
export interface GenerationParams {
  readonly model: string;
  /** Absent: the rest of the context, up to the server's limit. */
  readonly maxTokens?: number;
  /** The field `maxTokens` came from, for errors about it. */
  readonly maxTokensParam: string;
  readonly temperature: number;
  readonly topP: number;
  readonly seed?: number;
  readonly stop: readonly string[];
  readonly stream: boolean;
  readonly includeUsage: boolean;
}

/** One chat message of a request. */
export interface ChatTurn {
  /** Who said it. */
  readonly role: "system" | "user" | "assistant";
  /** What was said. */
  readonly content: string;
}

export interface CompletionInput extends GenerationParams {
  readonly prompt: string;
}

export interface ChatInput extends GenerationParams {
  readonly messages: readonly ChatTurn[];
}

/** OpenAI's path style for a nested field: `messages[0].content`. */
const paramOf = (path: ReadonlyArray<PropertyKey>): string | null =>
  path.length === 0 ? null : path.reduce<string>(
    (acc, key) =>
      typeof key === "number"
        ? `${acc}[${key}]`
        : acc === ""
        ? String(key)
        : `${acc}.${String(key)}`,
    "",
  );

/**
 * What a field must be, for fields whose schema issue would only describe the first member of
 * a union (Schema reports "Expected string" for `stop: 3`). Keys are paths without indices.
 */
const expected: Readonly<Record<string, string>> = {
  prompt: "expected a string or an array of exactly one string",
  stop: "expected a string or an array of at most 4 strings",
  "messages[].role": "expected one of 'system', 'user', 'assistant'",
  "messages[].content": `expected a string or an array of {"type": "text", "text": string} parts`,
};

/** The first decoding issue as OpenAI words it. */
const toApiError = (error: ParseResult.ParseError): ApiError => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error);
  const param = issue === undefined ? null : paramOf(issue.path);
  if (issue === undefined) return invalidRequest("Invalid request body.");
  if (issue._tag === "Missing") {
    return invalidRequest(`Missing required parameter: '${param}'.`, param);
  }
  if (param === null) return invalidRequest(`Invalid request body: ${issue.message}`);
  const why = expected[param.replace(/\[\d+\]/g, "[]")] ?? issue.message;
  return invalidRequest(`Invalid value for '${param}': ${why}`, param);
};

const decodeWith = <A, I>(
  schema: Schema.Schema<A, I>,
  body: unknown,
): Either.Either<A, ApiError> => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return Either.left(invalidRequest("The request body must be a JSON object."));
  }
  return Schema.decodeUnknownEither(schema, { errors: "first", onExcessProperty: "ignore" })(
    body,
  ).pipe(Either.mapLeft(toApiError));
};

/** The fields both endpoints share, with OpenAI's defaults (temperature 1, top_p 1). */
const paramsOf = (
  body:
    | Schema.Schema.Type<typeof CompletionRequestBody>
    | Schema.Schema.Type<typeof ChatCompletionRequestBody>,
  maxTokens: { readonly value?: number | null; readonly param: string },
): Either.Either<GenerationParams, ApiError> => {
  if (body.n != null && body.n !== 1) {
    return Either.left(
      invalidRequest(`Invalid value for 'n': this server returns one choice, so n must be 1.`, "n"),
    );
  }
  const stop = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  return Either.right({
    model: body.model,
    maxTokens: maxTokens.value ?? undefined,
    maxTokensParam: maxTokens.param,
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    seed: body.seed ?? undefined,
    // An empty stop string would match at once; OpenAI ignores it, so do we.
    stop: stop.filter((s) => s !== ""),
    stream: body.stream ?? false,
    includeUsage: body.stream_options?.include_usage ?? false,
  });
};

export const decodeCompletionRequest = (body: unknown): Either.Either<CompletionInput, ApiError> =>
  Either.flatMap(decodeWith(CompletionRequestBody, body), (decoded) =>
    Either.map(
      paramsOf(decoded, { value: decoded.max_tokens, param: "max_tokens" }),
      (params): CompletionInput => ({
        ...params,
        prompt: typeof decoded.prompt === "string" ? decoded.prompt : decoded.prompt[0],
      }),
    ));

const textOf = (content: Schema.Schema.Type<typeof ChatMessage>["content"]): string =>
  typeof content === "string" ? content : content.map((part) => part.text).join("");

export const decodeChatRequest = (body: unknown): Either.Either<ChatInput, ApiError> =>
  Either.flatMap(decodeWith(ChatCompletionRequestBody, body), (decoded) =>
    Either.map(
      paramsOf(
        decoded,
        decoded.max_completion_tokens != null
          ? { value: decoded.max_completion_tokens, param: "max_completion_tokens" }
          : { value: decoded.max_tokens, param: "max_tokens" },
      ),
      (params): ChatInput => ({
        ...params,
        messages: decoded.messages.map((m) => ({ role: m.role, content: textOf(m.content) })),
      }),
    ));
