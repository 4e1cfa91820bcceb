/**
 * The service's metrics as Effect `Metric`s, named as Prometheus expects (base unit in the name,
 * `_total` on counters). The engine and the HTTP layer update them; `serve/prometheus.ts` prints
 * every one from `Metric.snapshot`.
 */
import { Metric, MetricBoundaries } from "effect";

const latencyBuckets = MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 16 });

/** HTTP requests answered, by route and status code (tags added where they are counted). */
export const httpRequests = Metric.counter("tessera_http_requests_total", {
  description: "HTTP requests answered, by route and status",
  incremental: true,
});

export const promptTokens = Metric.counter("tessera_prompt_tokens_total", {
  description: "Prompt tokens prefilled",
  incremental: true,
});

export const generatedTokens = Metric.counter("tessera_generation_tokens_total", {
  description: "Tokens generated",
  incremental: true,
});

export const queueDepth = Metric.gauge("tessera_queue_depth", {
  description: "Requests waiting for a sequence slot",
});

export const runningRequests = Metric.gauge("tessera_running_requests", {
  description: "Requests decoding in the batch",
});

export const timeToFirstToken = Metric.histogram(
  "tessera_time_to_first_token_seconds",
  latencyBuckets,
  "Time from a request's admission to its first token",
);

/** Tagged with `rank`: from a step's command to that rank's reply. */
export const rankStepLatency = Metric.histogram(
  "tessera_rank_step_seconds",
  latencyBuckets,
  "Per-rank latency of one supervisor step",
);

/** Tagged with `rank`: time inside collectives during one step, as the rank measured it. */
export const collectiveLatency = Metric.histogram(
  "tessera_collective_seconds",
  latencyBuckets,
  "Per-rank time in collectives during one step",
);

export const batchSize = Metric.histogram(
  "tessera_batch_size",
  MetricBoundaries.linear({ start: 1, width: 1, count: 16 }),
  "Sequences in each decode step",
);

export const rankRestarts = Metric.counter("tessera_rank_restarts_total", {
  description: "Rank group restarts after a rank died",
  incremental: true,
});

export const engineStalls = Metric.counter("tessera_engine_stalls_total", {
  description: "Rank group restarts because no step completed with requests in flight",
  incremental: true,
});

export const failedReloads = Metric.counter("tessera_failed_reloads_total", {
  description: "Attempts to restart the rank group that failed to load it",
  incremental: true,
});

export const restartTimeouts = Metric.counter("tessera_restart_timeout_failures_total", {
  description: "Requests failed because the rank group was not back within the restart timeout",
  incremental: true,
});
