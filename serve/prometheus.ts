/**
 * Tessera's Effect metrics (those named `tessera_*`; Effect's own `effect_fiber_*` and other
 * runtime internals are left out) in Prometheus' text exposition format
 * 0.0.4: one `# HELP` and `# TYPE` per metric name, then one line per tag set. Counters and
 * gauges print their value; histograms print cumulative `_bucket{le="…"}` lines (Effect's
 * histogram buckets are already cumulative and end at +Inf), `_sum` and `_count`; summaries print
 * `{quantile="…"}`, `_sum`, `_count`; a frequency prints as a counter with a `key` label.
 */
import { Effect, Metric, type MetricPair, MetricState, Option } from "effect";

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = ReadonlyArray<readonly [string, string]>;

/** Prometheus names are `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`. */
export const metricName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_:]/g, "_");
  return /^[a-zA-Z_:]/.test(cleaned) ? cleaned : `_${cleaned}`;
};

/** Label names are `[a-zA-Z_][a-zA-Z0-9_]*`. */
const labelName = (name: string): string => {
  const cleaned = name.replace(/[^a-zA-Z0-9_]/g, "_");
  return /^[a-zA-Z_]/.test(cleaned) ? cleaned : `_${cleaned}`;
};

/** Label values escape backslash, double quote and newline (format 0.0.4). */
const labelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

/** HELP text escapes backslash and newline. */
const helpText = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

/** A sample value as Prometheus writes it (Go's float syntax: +Inf, -Inf, NaN). */
export const sampleValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString();
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
};

const labelSet = (labels: Labels): string =>
  labels.length === 0
    ? ""
    : `{${labels.map(([k, v]) => `${labelName(k)}="${labelValue(v)}"`).join(",")}}`;

const sample = (name: string, labels: Labels, value: number | bigint) =>
  `${name}${labelSet(labels)} ${sampleValue(value)}`;

type PromType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

/** The sample lines of one metric pair, and the Prometheus type they belong to. */
const samplesOf = (
  name: string,
  labels: Labels,
  state: MetricState.MetricState.Untyped,
): { readonly type: PromType; readonly lines: readonly string[] } => {
  if (MetricState.isCounterState(state)) {
    return { type: "counter", lines: [sample(name, labels, state.count)] };
  }
  if (MetricState.isGaugeState(state)) {
    return { type: "gauge", lines: [sample(name, labels, state.value)] };
  }
  if (MetricState.isHistogramState(state)) {
    const buckets = state.buckets.map(([le, count]) =>
      sample(`${name}_bucket`, [...labels, ["le", sampleValue(le)]], count)
    );
    // Prometheus requires the +Inf bucket; Effect's boundaries end with it, but be sure.
    if (!state.buckets.some(([le]) => le === Infinity)) {
      buckets.push(sample(`${name}_bucket`, [...labels, ["le", "+Inf"]], state.count));
    }
    return {
      type: "histogram",
      lines: [
        ...buckets,
        sample(`${name}_sum`, labels, state.sum),
        sample(`${name}_count`, labels, state.count),
      ],
    };
  }
  if (MetricState.isSummaryState(state)) {
    const quantiles = state.quantiles.flatMap(([q, value]) =>
      Option.isSome(value) ? [sample(name, [...labels, ["quantile", String(q)]], value.value)] : []
    );
    return {
      type: "summary",
      lines: [
        ...quantiles,
        sample(`${name}_sum`, labels, state.sum),
        sample(`${name}_count`, labels, state.count),
      ],
    };
  }
  if (MetricState.isFrequencyState(state)) {
    const lines = [...state.occurrences].map(([key, count]) =>
      sample(name, [...labels, ["key", key]], count)
    );
    return { type: "counter", lines };
  }
  return { type: "untyped", lines: [] };
};

/** The exposition text of the given metric pairs, grouped by name, names sorted. */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, { help?: string; type: PromType; lines: string[] }>();
  for (const pair of pairs) {
    const name = metricName(pair.metricKey.name);
    const labels: Labels = [...pair.metricKey.tags]
      .map((t) => [t.key, t.value] as const)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const { type, lines } = samplesOf(name, labels, pair.metricState);
    const family = families.get(name) ?? { type, lines: [] };
    family.help ??= Option.getOrUndefined(pair.metricKey.description);
    family.lines.push(...lines);
    families.set(name, family);
  }
  let out = "";
  for (const name of [...families.keys()].sort()) {
    const family = families.get(name)!;
    if (family.help !== undefined) out += `# HELP ${name} ${helpText(family.help)}\n`;
    out += `# TYPE ${name} ${family.type}\n`;
    for (const line of family.lines) out += line + "\n";
  }
  return out;
};

/** The prefix of every metric Tessera registers; nothing else is exposed. */
export const TESSERA_METRIC_PREFIX = "tessera_";

/** Only Tessera's own metrics: the runtime's internals are not the service's to expose. */
export const tesseraMetrics = (
  pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>,
): ReadonlyArray<MetricPair.MetricPair.Untyped> =>
  pairs.filter((pair) => pair.metricKey.name.startsWith(TESSERA_METRIC_PREFIX));

/** Every Tessera metric this process has registered, as exposition text. */
export const prometheusText: Effect.Effect<string> = Effect.map(
  Metric.snapshot,
  (pairs) => renderPrometheus(tesseraMetrics(pairs)),
);
