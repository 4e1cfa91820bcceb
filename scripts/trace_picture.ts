/**
 * Draws one decode step of a Chrome trace written by `--trace` as an SVG timeline (the README's
 * picture): a row per track (supervisor steps; each rank's steps, kernels, transfers and waits),
 * a box per span, coloured by category. The step shown is the last one that starts with an
 * `Embed` on the supervisor's track and ends with its `LmHead`.
 *
 *   deno run -A scripts/trace_picture.ts TRACE.json OUT.svg
 */
import type { TraceEvent, TraceFile } from "../observe/chrome_trace.ts";

const COLOURS: Record<string, string> = {
  step: "#8aa4d6",
  kernels: "#e07b39",
  transfer: "#4caf7a",
  wait: "#c9c9c9",
  request: "#9b7fd1",
};
const WIDTH = 1100;
const LABEL = 150;
const ROW = 26;
const TOP = 34;

const escape = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const [input, output] = Deno.args;
if (!input || !output) {
  console.error("usage: deno run -A scripts/trace_picture.ts TRACE.json OUT.svg");
  Deno.exit(2);
}
const trace: TraceFile = JSON.parse(await Deno.readTextFile(input));
const spans = trace.traceEvents.filter((e) => e.ph === "X") as Required<TraceEvent>[];
const names = new Map<string, string>();
for (const e of trace.traceEvents.filter((e) => e.ph === "M")) {
  if (e.name === "process_name") names.set(`${e.pid}`, String(e.args?.name));
  if (e.name === "thread_name") names.set(`${e.pid}/${e.tid}`, String(e.args?.name));
}

// The window: the supervisor's last Embed up to the end of the LmHead after it.
const supervisor = spans.filter((e) => e.pid === 0 && e.cat === "step");
const embeds = supervisor.filter((e) => e.name === "Embed");
const lastEmbed = embeds.at(-2) ?? embeds.at(-1); // the last full decode step
if (!lastEmbed) throw new Error("no Embed step on the supervisor's track");
const head = supervisor.find((e) => e.name === "LmHead" && e.ts >= lastEmbed.ts);
const from = lastEmbed.ts;
const to = head ? head.ts + head.dur : from + 50_000;
const inWindow = spans.filter((e) => e.ts + e.dur > from && e.ts < to && e.cat !== "request");

const tracks = [...new Set(inWindow.map((e) => `${e.pid}/${e.tid}`))].sort((a, b) => {
  const [pa, ta] = a.split("/").map(Number);
  const [pb, tb] = b.split("/").map(Number);
  return pa - pb || ta - tb;
});
const x = (ts: number) => LABEL + ((ts - from) / (to - from)) * (WIDTH - LABEL - 10);
const height = TOP + tracks.length * ROW + 30;
const parts: string[] = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" ` +
  `font-family="system-ui, sans-serif" font-size="12">`,
  `<rect width="100%" height="100%" fill="#fff"/>`,
  `<text x="10" y="20" font-size="14" font-weight="600">One decode step, ${
    ((to - from) / 1000).toFixed(1)
  } ms (Chrome trace from --trace, drawn by scripts/trace_picture.ts)</text>`,
];
tracks.forEach((track, i) => {
  const [pid] = track.split("/");
  const y = TOP + i * ROW;
  if (i % 2 === 0) {
    parts.push(`<rect x="0" y="${y}" width="${WIDTH}" height="${ROW}" fill="#f5f6f9"/>`);
  }
  parts.push(
    `<text x="10" y="${y + 17}">${escape(`${names.get(pid)} · ${names.get(track)}`)}</text>`,
  );
  for (const e of inWindow.filter((e) => `${e.pid}/${e.tid}` === track)) {
    const x0 = Math.max(LABEL, x(e.ts));
    const w = Math.max(0.5, Math.min(x(e.ts + e.dur), WIDTH - 10) - x0);
    parts.push(
      `<rect x="${x0.toFixed(1)}" y="${y + 4}" width="${w.toFixed(1)}" height="${ROW - 8}" ` +
        `fill="${COLOURS[e.cat] ?? "#999"}"><title>${escape(e.name)} ${
          (e.dur / 1000).toFixed(3)
        } ms</title></rect>`,
    );
    if (w > 60) {
      parts.push(
        `<text x="${(x0 + 4).toFixed(1)}" y="${y + 17}" font-size="10">${escape(e.name)}</text>`,
      );
    }
  }
});
const legendY = TOP + tracks.length * ROW + 20;
Object.entries(COLOURS).slice(0, 4).forEach(([cat, colour], i) => {
  parts.push(
    `<rect x="${LABEL + i * 110}" y="${legendY - 10}" width="12" height="12" fill="${colour}"/>`,
  );
  parts.push(`<text x="${LABEL + i * 110 + 18}" y="${legendY}">${cat}</text>`);
});
parts.push("</svg>");
await Deno.writeTextFile(output, parts.join("\n") + "\n");
console.log(`${output}: ${tracks.length} tracks, ${inWindow.length} spans`);
