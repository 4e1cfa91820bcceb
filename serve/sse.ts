/**
 * Server-sent events as OpenAI streams them: each event one `data: <json>` line and a blank
 * line, the stream closed by `data: [DONE]`. Only JSON from `JSON.stringify` goes into a
 * `data:` line, and JSON never holds a raw newline, so an event cannot be split or forged by
 * generated text. A stream that has been quiet for a while gets a `: keep-alive` comment line,
 * which SSE clients skip.
 */
import { HttpServerResponse } from "@effect/platform";
import { Duration, Effect, Schedule, Stream } from "effect";

export const sseEvent = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;

export const SSE_DONE = "data: [DONE]\n\n";

/** An SSE comment: ignored by clients, it shows them (and proxies) the stream is alive. */
export const SSE_KEEP_ALIVE = ": keep-alive\n\n";

/**
 * `events` with a keep-alive comment whenever nothing was sent for `intervalMillis`, so a
 * stream waiting on a restarting engine does not look dead; it ends when `events` ends.
 */
export const withKeepAlive = <E>(
  events: Stream.Stream<string, E>,
  intervalMillis: number,
): Stream.Stream<string, E> =>
  Stream.suspend(() => {
    let sentAt = performance.now();
    const keepAlives = Stream.fromSchedule(Schedule.spaced(Duration.millis(intervalMillis))).pipe(
      Stream.filter(() => performance.now() - sentAt >= intervalMillis),
      Stream.as(SSE_KEEP_ALIVE),
    );
    return Stream.merge(events, keepAlives, { haltStrategy: "left" }).pipe(
      Stream.tap(() => Effect.sync(() => void (sentAt = performance.now()))),
    );
  });

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
