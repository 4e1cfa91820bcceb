/**
 * Loading progress, one bar per rank (bytes of shards read of the bytes its plan needs). On a
 * terminal the bars redraw in place; anywhere else (CI logs, files) each rank prints one line
 * when it has read everything, so logs stay clean.
 */
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import type { LoadProgress } from "./rank_events.ts";

/** Shows load progress events as they arrive. */
export interface ProgressView {
  /** Takes one rank's progress. */
  update(event: LoadProgress): void;
  /** Ends the display (bars stop redrawing). */
  stop(): void;
}

const megabytes = (bytes: number) => (bytes / 1e6).toFixed(1);

/** One line per rank as it finishes reading, e.g. `rank 1: read 13.2 MB of shards in 0.4 s`. */
export const lineProgress = (write: (line: string) => void): ProgressView => {
  const started = new Map<number, number>();
  const finished = new Set<number>();
  return {
    update: (event) => {
      if (!started.has(event.rank)) started.set(event.rank, performance.now());
      if (event.bytesRead < event.bytesPlanned || finished.has(event.rank)) return;
      finished.add(event.rank);
      const seconds = (performance.now() - started.get(event.rank)!) / 1000;
      write(
        `rank ${event.rank}: read ${megabytes(event.bytesRead)} MB of shards in ` +
          `${seconds.toFixed(1)} s`,
      );
    },
    stop: () => {},
  };
};

/**
 * One bar on a terminal stream (cli-progress), summing every rank's bytes: a single line
 * redrawn in place (carriage return and clear-to-end, never a cursor move up), so a line
 * another writer prints meanwhile can push it down but is never overwritten. The bar stops
 * itself, with its final frame and a newline, the moment every rank of the group has read
 * everything: nothing redraws after loading, so streamed text cannot be overwritten.
 */
export const barProgress = (stream: NodeJS.WriteStream): ProgressView => {
  const bar = new cliProgress.SingleBar({
    format: "loading shards [{bar}] {percentage}% | {read}/{planned} MB | {ready}/{ranks} ranks",
    hideCursor: true,
    clearOnComplete: false,
    stopOnComplete: false,
    stream,
  }, cliProgress.Presets.shades_classic);
  const byRank = new Map<number, LoadProgress>();
  let state: "idle" | "drawing" | "stopped" = "idle";
  const stop = () => {
    if (state === "drawing") bar.stop();
    state = "stopped";
  };
  return {
    update: (event) => {
      if (state === "stopped") return;
      byRank.set(event.rank, event);
      const events = [...byRank.values()];
      const read = events.reduce((sum, e) => sum + e.bytesRead, 0);
      const planned = events.reduce((sum, e) => sum + e.bytesPlanned, 0);
      const ready = events.filter((e) => e.bytesRead >= e.bytesPlanned).length;
      const payload = {
        read: megabytes(read),
        planned: megabytes(planned),
        ready,
        ranks: event.ranks,
      };
      if (state === "idle") {
        bar.start(planned, read, payload);
        state = "drawing";
      }
      bar.setTotal(planned);
      bar.update(read, payload);
      if (ready >= event.ranks) stop();
    },
    stop,
  };
};
