/**
 * OpenAI's response bodies: `text_completion` and `chat.completion` objects, and the chunks of
 * their streams, field for field as api.openai.com sends them (`logprobs: null`, `usage` with
 * prompt/completion/total tokens, ids `cmpl-…` and `chatcmpl-…`, `created` in seconds).
 */
import type { FinishReason } from "../engine/engine.ts";

export const SYSTEM_FINGERPRINT = "tessera";

export interface Usage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
}

export const usageOf = (promptTokens: number, completionTokens: number): Usage => ({
  prompt_tokens: promptTokens,
  completion_tokens: completionTokens,
  total_tokens: promptTokens + completionTokens,
});

/** What every object of one response shares. */
export interface ResponseHeader {
  readonly id: string;
  readonly created: number;
  readonly model: string;
}

export const newHeader = (kind: "completion" | "chat", model: string): ResponseHeader => ({
  id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID().replaceAll("-", "")}`,
  created: Math.floor(Date.now() / 1000),
  model,
});

/**
 * One endpoint's shapes. Streams: `opening` chunks first (chat announces the role), a `delta`
 * per piece of text, `closing` with the finish reason and no text, then, when the client asked
 * with `stream_options.include_usage`, `usage` (no choices).
 */
export interface ResponseShapes {
  readonly complete: (
    h: ResponseHeader,
    text: string,
    finish: FinishReason,
    usage: Usage,
  ) => unknown;
  readonly opening: (h: ResponseHeader, withUsage: boolean) => readonly unknown[];
  readonly delta: (h: ResponseHeader, text: string, withUsage: boolean) => unknown;
  readonly closing: (h: ResponseHeader, finish: FinishReason, withUsage: boolean) => unknown;
  readonly usage: (h: ResponseHeader, usage: Usage) => unknown;
}

/** With include_usage every chunk carries `usage: null` until the last, as OpenAI sends. */
const nullUsage = (withUsage: boolean) => (withUsage ? { usage: null } : {});

export const completionShapes: ResponseShapes = {
  complete: (h, text, finish, usage) => ({
    id: h.id,
    object: "text_completion",
    created: h.created,
    model: h.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
    usage,
  }),
  opening: () => [],
  delta: (h, text, withUsage) => completionChunk(h, text, null, withUsage),
  closing: (h, finish, withUsage) => completionChunk(h, "", finish, withUsage),
  usage: (h, usage) => ({
    id: h.id,
    object: "text_completion",
    created: h.created,
    model: h.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [],
    usage,
  }),
};

const completionChunk = (
  h: ResponseHeader,
  text: string,
  finish: FinishReason | null,
  withUsage: boolean,
) => ({
  id: h.id,
  object: "text_completion",
  created: h.created,
  model: h.model,
  system_fingerprint: SYSTEM_FINGERPRINT,
  choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
  ...nullUsage(withUsage),
});

const chatChunk = (
  h: ResponseHeader,
  delta: { readonly role?: "assistant"; readonly content?: string },
  finish: FinishReason | null,
  withUsage: boolean,
) => ({
  id: h.id,
  object: "chat.completion.chunk",
  created: h.created,
  model: h.model,
  system_fingerprint: SYSTEM_FINGERPRINT,
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  ...nullUsage(withUsage),
});

export const chatShapes: ResponseShapes = {
  complete: (h, text, finish, usage) => ({
    id: h.id,
    object: "chat.completion",
    created: h.created,
    model: h.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [{
      index: 0,
      message: { role: "assistant", content: text },
      logprobs: null,
      finish_reason: finish,
    }],
    usage,
  }),
  opening: (h, withUsage) => [chatChunk(h, { role: "assistant", content: "" }, null, withUsage)],
  delta: (h, text, withUsage) => chatChunk(h, { content: text }, null, withUsage),
  closing: (h, finish, withUsage) => chatChunk(h, {}, finish, withUsage),
  usage: (h, usage) => ({
    id: h.id,
    object: "chat.completion.chunk",
    created: h.created,
    model: h.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices: [],
    usage,
  }),
};
