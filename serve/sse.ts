/**
 * Server-sent events as OpenAI streams them: each event one `data: <json>` line and a blank
 * line, the stream closed by `data: [DONE]`. Only JSON from `JSON.stringify` goes into a
 * `data:` line, and JSON never holds a raw newline, so an event cannot be split or forged by
 * generated text.
 */
import { HttpServerResponse } from "@effect/platform";
import { Stream } from "effect";

export const sseEvent = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;

export const SSE_DONE = "data: [DONE]\n\n";

/**
 * A streaming response of SSE events. The body is pulled as the client reads it; a client that
 * goes away cancels the body, which interrupts `events` and with it the engine stream.
 */
export const sseResponse = <E>(events: Stream.Stream<string, E>) =>
  HttpServerResponse.stream(Stream.encodeText(events), {
    contentType: "text/event-stream",
    headers: {
      "cache-control": "no-cache",
      // Reverse proxies (nginx) must not buffer the stream.
      "x-accel-buffering": "no",
    },
  });
