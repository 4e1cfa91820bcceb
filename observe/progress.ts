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

/** Redrawn bars on a terminal stream (cli-progress). */
export const barProgress = (stream: NodeJS.WriteStream): ProgressView => {
  const bars = new cliProgress.MultiBar({
    format: "rank {rank} [{bar}] {percentage}% | {read}/{planned} MB",
    hideCursor: true,
    clearOnComplete: false,
    stopOnComplete: false,
    stream,
  }, cliProgress.Presets.shades_classic);
  const byRank = new Map<number, cliProgress.SingleBar>();
  let stopped = false;
  return {
    update: (event) => {
      if (stopped) return;
      const payload = {
        rank: event.rank,
        read: megabytes(event.bytesRead),
        planned: megabytes(event.bytesPlanned),
      };
      let bar = byRank.get(event.rank);
      if (!bar) {
        bar = bars.create(event.bytesPlanned, event.bytesRead, payload);
        byRank.set(event.rank, bar);
      }
      bar.setTotal(event.bytesPlanned);
      bar.update(event.bytesRead, payload);
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      bars.stop();
    },
  };
};
