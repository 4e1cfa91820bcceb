/**
 * Chrome's trace-event JSON (opens in Perfetto and chrome://tracing): one process row for the
 * supervisor and one per rank, and within each a track per span category, so kernel segments,
 * transfers and waits of a rank sit under each other and line up with its steps.
 */
import { Effect } from "effect";
import type { SpanCategory, TimelineSpan } from "./rank_events.ts";
import { wallClockMillis } from "./timeline.ts";

/** One event of the trace-event format (complete "X" spans and "M" metadata only). */
export interface TraceEvent {
  /** The span's name, or the metadata record's (`process_name`, `thread_name`, ...). */
  readonly name: string;
  /** "X": a complete span; "M": metadata naming or ordering a row. */
  readonly ph: "X" | "M";
  /** The row: 0 the supervisor, r + 1 rank r. */
  readonly pid: number;
  /** The track within the row (a span category, or a request slot). */
  readonly tid: number;
  /** Start, microseconds from the trace's origin. */
  readonly ts?: number;
  /** Duration in microseconds. */
  readonly dur?: number;
  /** The span's category. */
  readonly cat?: string;
  /** Values shown with the span, or the metadata's value. */
  readonly args?: Record<string, string | number>;
}

/** The file's top level. */
export interface TraceFile {
  /** Spans and metadata. */
  readonly traceEvents: TraceEvent[];
  /** How viewers show times. */
  readonly displayTimeUnit: "ms";
  /** The producer, the wall-clock origin and the count of dropped spans. */
  readonly otherData: Record<string, string | number>;
}

/** Whose span: the supervisor's, or a rank's. */
export type TraceOwner = "supervisor" | { readonly rank: number };

const TRACKS: readonly SpanCategory[] = ["step", "kernels", "transfer", "wait", "request"];
/** Requests get a track per KV-cache slot, since concurrent requests overlap in time. */
const REQUEST_TRACK_BASE = 100;

const pidOf = (owner: TraceOwner) => owner === "supervisor" ? 0 : owner.rank + 1;

/** Collects spans from every isolate and renders them as one trace. */
export class ChromeTrace {
  private readonly events: TraceEvent[] = [];
  private readonly named = new Set<string>();
  private dropped = 0;
  /** Every timestamp is relative to this wall-clock instant, so the trace starts near 0. */
  readonly originMillis: number = wallClockMillis();

  /** At most `limit` spans are kept; later ones are counted in `otherData.droppedSpans`. */
  constructor(private readonly limit = 2_000_000) {}

  /** Adds finished spans of one owner. */
  add(owner: TraceOwner, spans: readonly TimelineSpan[]): void {
    const pid = pidOf(owner);
    this.nameProcess(pid, owner === "supervisor" ? "supervisor" : `rank ${owner.rank}`);
    for (const span of spans) {
      if (this.events.length >= this.limit) {
        this.dropped++;
        continue;
      }
      const slot = span.args?.slot;
      const tid = span.category === "request" && slot !== undefined
        ? REQUEST_TRACK_BASE + slot
        : TRACKS.indexOf(span.category);
      this.nameThread(
        pid,
        tid,
        tid >= REQUEST_TRACK_BASE ? `requests (slot ${slot})` : span.category,
      );
      this.events.push({
        name: span.name,
        cat: span.category,
        ph: "X",
        pid,
        tid,
        ts: (span.startMillis - this.originMillis) * 1000,
        dur: span.durationMillis * 1000,
        args: span.args,
      });
    }
  }

  /** The trace as Chrome's JSON object format. */
  toJSON(): TraceFile {
    return {
      traceEvents: this.events,
      displayTimeUnit: "ms",
      otherData: {
        producer: "tessera",
        origin: new Date(this.originMillis).toISOString(),
        droppedSpans: this.dropped,
      },
    };
  }

  /** Names row `pid` once. */
  private nameProcess(pid: number, name: string) {
    const key = `${pid}`;
    if (this.named.has(key)) return;
    this.named.add(key);
    this.events.push({ name: "process_name", ph: "M", pid, tid: 0, args: { name } });
    this.events.push({
      name: "process_sort_index",
      ph: "M",
      pid,
      tid: 0,
      args: { sort_index: pid },
    });
  }

  /** Names track `tid` of row `pid` once. */
  private nameThread(pid: number, tid: number, name: string) {
    const key = `${pid}/${tid}`;
    if (this.named.has(key)) return;
    this.named.add(key);
    this.events.push({ name: "thread_name", ph: "M", pid, tid, args: { name } });
    this.events.push({ name: "thread_sort_index", ph: "M", pid, tid, args: { sort_index: tid } });
  }
}

/** Writes the trace to `path` as JSON; a failed write is logged, never fatal. */
export const writeChromeTrace =
  (path: string): (trace: ChromeTrace) => Effect.Effect<void> =>
  (trace: ChromeTrace): Effect.Effect<void> =>
    Effect.tryPromise(() => Deno.writeTextFile(path, JSON.stringify(trace.toJSON()))).pipe(
      Effect.tap(() =>
        Effect.logInfo(`trace written to ${path}`).pipe(
          Effect.annotateLogs("spans", trace.toJSON().traceEvents.length),
        )
      ),
      Effect.catchAll((e) => Effect.logError(`cannot write the trace to ${path}: ${e.message}`)),
      Effect.annotateLogs("rank", "supervisor"),
    );
