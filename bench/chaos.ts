/**
 * `deno task bench:chaos`: the operator's chaos probe, re-measured against a real `deno task
 * serve` (stories260K, tp 2, Workers, default HTTP timeouts) in a child process:
 *
 * - rank kills (the admin drill) with 8 greedy requests in flight: time until /health shows the
 *   restart, time until it is ready again, and whether every request's text equals an unkilled run;
 * - the server's threads, fds and RSS before and after 10 kills of an idle group;
 * - 20k- and 80k-character prompts: time to the answer, and the slowest /health meanwhile;
 * - a header trickle, an idle kept-alive connection and a body trickle: time until closed;
 * - a JSON body nested 3000 deep: the answer and its time;
 * - a paused rank (alive, silent) with work in flight: time to /health "stalled", then to ready;
 * - SIGKILL of a tcp-transport server: whether its rank processes outlive it.
 *
 * Writes its section of docs/BENCHMARKS.md and docs/benchmarks/chaos.json; the README quotes it.
 */
import { Effect } from "effect";
import { STORIES260K_PATH, TOK512_PATH } from "../assets/paths.ts";
import { helpText, parseFlagTable, versionText } from "../cli/flag_table.ts";
import { positiveInt } from "../cli/flags.ts";
import { runMain } from "../cli/main.ts";
import { machine, writeSection } from "./report.ts";

const ADMIN_KEY = "chaos-admin-key";
const MODEL_ID = "stories260K";
const PROMPTS = [
  "Once upon a time",
  "The cat",
  "Lily wanted",
  "One day, a big dog",
  "Tom and Sue",
  "The sun was",
  "A little bird",
  "There was a girl",
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Server {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  stop(): Promise<void>;
}

/** `cli/serve.ts` with `flags` on a free port, once it listens. */
const startServer = async (flags: readonly string[]): Promise<Server> => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "--unstable-no-legacy-abort",
      "cli/serve.ts",
      "--model",
      STORIES260K_PATH,
      "--tokenizer",
      TOK512_PATH,
      "--port",
      "0",
      "--model-id",
      MODEL_ID,
      "--admin-key",
      ADMIN_KEY,
      "--log-level",
      "error",
      ...flags,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    out += value;
  }
  const match = /listening on (http:\/\/[^:]+:(\d+))/.exec(out);
  if (match === null) throw new Error(`the server did not start: ${out}`);
  return {
    url: match[1],
    port: Number(match[2]),
    pid: child.pid,
    stop: async () => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await lines.cancel().catch(() => {});
    },
  };
};

const complete = async (server: Server, prompt: string, maxTokens: number) => {
  const response = await fetch(`${server.url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL_ID, prompt, max_tokens: maxTokens, temperature: 0 }),
  });
  const body = await response.json();
  return { status: response.status, text: body?.choices?.[0]?.text as string | undefined };
};

const health = async (server: Server) => {
  const started = performance.now();
  const response = await fetch(`${server.url}/health`);
  const body = await response.json();
  return {
    status: response.status,
    state: body.state as string,
    restarts: body.restarts as number,
    millis: performance.now() - started,
  };
};

const admin = (server: Server, path: string) =>
  fetch(`${server.url}/admin/ranks/${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
  }).then((response) => response.body?.cancel());

/** Polls /health every 5 ms until `done`; the time it took (ms), or undefined at `boundMs`. */
const waitForHealth = async (
  server: Server,
  done: (h: Awaited<ReturnType<typeof health>>) => boolean,
  boundMs = 60_000,
) => {
  const started = performance.now();
  while (performance.now() - started < boundMs) {
    if (done(await health(server))) return performance.now() - started;
    await sleep(5);
  }
  return undefined;
};

/** The process's threads, open fds and RSS (Linux /proc). */
const processFigures = (pid: number) => {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1]);
  return {
    threads: field("Threads"),
    fds: [...Deno.readDirSync(`/proc/${pid}/fd`)].length,
    rssMB: Math.round(field("VmRSS") / 1024),
  };
};

const range = (xs: readonly number[]) =>
  xs.length === 0 ? "–" : `${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))}`;

/** A raw connection that sends with `send`; ms until the server closed it (or the bound). */
const timeUntilClosed = async (
  server: Server,
  send: (conn: Deno.Conn) => Promise<void>,
  boundMs: number,
) => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const started = performance.now();
  let closed = false;
  const bound = setTimeout(() => conn.close(), boundMs);
  const sending = send(conn).catch(() => {});
  const buffer = new Uint8Array(4096);
  try {
    while ((await conn.read(buffer)) !== null) { /* the server's answer, if any */ }
    closed = true;
  } catch {
    /* reset by the server counts as closed; the bound's close does not */
    closed = performance.now() - started < boundMs;
  }
  clearTimeout(bound);
  try {
    conn.close();
  } catch { /* closed */ }
  await sending;
  return closed ? performance.now() - started : undefined;
};

const write = (conn: Deno.Conn, text: string) => conn.write(new TextEncoder().encode(text));

const killsWithTraffic = async (server: Server, kills: number) => {
  const reference = await Promise.all(PROMPTS.map((p) => complete(server, p, 96)));
  const detect: number[] = [], recover: number[] = [];
  let identical = 0, failed = 0;
  for (let kill = 0; kill < kills; kill++) {
    const { restarts } = await health(server);
    const inFlight = Promise.all(PROMPTS.map((p) => complete(server, p, 96)));
    await sleep(150);
    const killedAt = performance.now();
    await admin(server, `${kill % 2}/kill`);
    const seen = await waitForHealth(server, (h) => h.restarts > restarts || h.status !== 200);
    if (seen !== undefined) detect.push(performance.now() - killedAt);
    const readyAfter = await waitForHealth(
      server,
      (h) => h.status === 200 && h.restarts > restarts,
    );
    if (readyAfter !== undefined) recover.push(performance.now() - killedAt);
    const results = await inFlight;
    for (const [i, r] of results.entries()) {
      if (r.status !== 200) failed++;
      else if (r.text === reference[i].text) identical++;
    }
  }
  return {
    detectMs: detect,
    recoverMs: recover,
    identical,
    failed,
    total: kills * PROMPTS.length,
  };
};

const idleKills = async (server: Server, kills: number) => {
  await sleep(500);
  const before = processFigures(server.pid);
  for (let kill = 0; kill < kills; kill++) {
    const { restarts } = await health(server);
    await admin(server, `${kill % 2}/kill`);
    await waitForHealth(server, (h) => h.status === 200 && h.restarts > restarts);
  }
  await sleep(1500);
  return { before, after: processFigures(server.pid) };
};

const longPrompts = async (server: Server) => {
  const rows = [];
  for (const characters of [20_000, 80_000]) {
    let slowestHealth = 0, polling = true;
    const poller = (async () => {
      while (polling) {
        slowestHealth = Math.max(slowestHealth, (await health(server)).millis);
        await sleep(20);
      }
    })();
    const started = performance.now();
    const { status } = await complete(server, "a ".repeat(characters / 2), 8);
    const answeredMs = performance.now() - started;
    polling = false;
    await poller;
    rows.push({ characters, status, answeredMs, slowestHealthMs: slowestHealth });
  }
  return rows;
};

const slowClients = (server: Server) =>
  Promise.all([
    timeUntilClosed(server, async (conn) => {
      await write(conn, "GET /health HTTP/1.1\r\nhost: x\r\n");
      for (let i = 0; i < 400; i++) {
        await sleep(250);
        await write(conn, `x-trickle-${i}: 1\r\n`);
      }
    }, 100_000),
    timeUntilClosed(server, () => Promise.resolve(), 100_000),
    timeUntilClosed(server, async (conn) => {
      await write(
        conn,
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" +
          "content-length: 1000\r\n\r\n{",
      );
      for (let i = 0; i < 100; i++) {
        await sleep(1000);
        await write(conn, " ");
      }
    }, 100_000),
  ]).then(([headerTrickleMs, idleMs, bodyTrickleMs]) => ({
    headerTrickleMs,
    idleMs,
    bodyTrickleMs,
  }));

const deepJson = async (server: Server) => {
  const started = performance.now();
  const response = await fetch(`${server.url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: `{"model":"${MODEL_ID}","prompt":${"[".repeat(3000)}${"]".repeat(3000)}}`,
  });
  await response.body?.cancel();
  return { status: response.status, millis: performance.now() - started };
};

const pausedRank = async (server: Server, stallSeconds: number) => {
  const inFlight = Promise.all(PROMPTS.slice(0, 4).map((p) => complete(server, p, 200)));
  await sleep(150);
  const pausedAt = performance.now();
  await admin(server, `1/pause?seconds=${stallSeconds * 4}`);
  const stalledAfter = await waitForHealth(
    server,
    (h) => h.state === "stalled" || h.state === "restarting",
  );
  const readyAfter = await waitForHealth(server, (h) => h.status === 200);
  const results = await inFlight;
  return {
    stalledMs: stalledAfter === undefined ? undefined : stalledAfter,
    readyMs: readyAfter === undefined ? undefined : performance.now() - pausedAt,
    completed: results.filter((r) => r.status === 200).length,
    total: results.length,
  };
};

/** SIGKILL of a tcp-transport server: its rank processes must die with it. */
const orphanedRanks = async () => {
  const server = await startServer(["--tp", "2", "--share-adapter", "--transport", "tcp"]);
  const children = Deno.readTextFileSync(`/proc/${server.pid}/task/${server.pid}/children`)
    .trim().split(/\s+/).filter(Boolean).map(Number);
  await server.stop();
  const started = performance.now();
  const alive = () =>
    children.filter((pid) => {
      try {
        return !/^State:\s+Z/m.test(Deno.readTextFileSync(`/proc/${pid}/status`));
      } catch {
        return false;
      }
    });
  while (alive().length > 0 && performance.now() - started < 10_000) await sleep(20);
  return {
    ranks: children.length,
    aliveAfter: alive().length,
    goneMs: performance.now() - started,
  };
};

/** Runs every probe; writes the table. */
const probe = async (killCount: number, idleKillCount: number, stallSeconds: number) => {
  const server = await startServer([
    "--tp",
    "2",
    "--share-adapter",
    "--stall-seconds",
    String(stallSeconds),
  ]);
  let results;
  try {
    console.error("chaos: kills with traffic");
    const kills = await killsWithTraffic(server, killCount);
    console.error("chaos: idle kills");
    const leak = await idleKills(server, idleKillCount);
    console.error("chaos: long prompts");
    const prompts = await longPrompts(server);
    console.error("chaos: slow clients (default timeouts; about a minute)");
    const slow = await slowClients(server);
    console.error("chaos: deep JSON, paused rank");
    const deep = await deepJson(server);
    const pause = await pausedRank(server, stallSeconds);
    results = { kills, leak, prompts, slow, deep, pause };
  } finally {
    await server.stop();
  }
  console.error("chaos: SIGKILL of a tcp server");
  const orphans = await orphanedRanks();
  const seconds = (ms: number | undefined) =>
    ms === undefined ? "not closed" : `${(ms / 1000).toFixed(1)} s`;
  const { kills, leak, prompts, slow, deep, pause } = results;
  const rows = [
    [
      "Rank kill with 8 requests in flight: detected",
      "27–128 ms",
      `${range(kills.detectMs)} ms (${kills.detectMs.length} kills)`,
    ],
    [
      "… group ready again",
      "1.3–2.3 s",
      `${(Math.min(...kills.recoverMs) / 1000).toFixed(1)}–${
        (Math.max(...kills.recoverMs) / 1000).toFixed(1)
      } s`,
    ],
    [
      "… requests equal to an unkilled run",
      "48/48",
      `${kills.identical}/${kills.total}${kills.failed ? ` (${kills.failed} failed)` : ""}`,
    ],
    [
      `Server after ${idleKillCount} idle kills: threads`,
      "+4 per restart",
      `${leak.before.threads} → ${leak.after.threads}`,
    ],
    ["… open fds", "+~6 per restart", `${leak.before.fds} → ${leak.after.fds}`],
    ["… RSS", "+18–60 MB per restart", `${leak.before.rssMB} → ${leak.after.rssMB} MB`],
    ...prompts.map((p) => [
      `${p.characters / 1000}k-character prompt: answer`,
      p.characters === 20_000 ? "10 s (encoded)" : "131 s (encoded)",
      `HTTP ${p.status} in ${Math.round(p.answeredMs)} ms`,
    ]),
    ...prompts.map((p) => [
      `… slowest /health meanwhile (${p.characters / 1000}k)`,
      "no answer until done",
      `${Math.round(p.slowestHealthMs)} ms`,
    ]),
    [
      "Header trickle (1 line / 250 ms): closed after",
      "open after 300 s",
      seconds(slow.headerTrickleMs),
    ],
    ["Idle connection: closed after", "open after 300 s", seconds(slow.idleMs)],
    ["Body trickle (1 byte / s): closed after", "open after 300 s", seconds(slow.bodyTrickleMs)],
    ["JSON nested 3000 deep", "HTTP 500", `HTTP ${deep.status} in ${Math.round(deep.millis)} ms`],
    [
      `Paused rank, requests in flight (--stall-seconds ${stallSeconds}): /health not ready after`,
      "never (ready while stalled)",
      seconds(pause.stalledMs),
    ],
    ["… ready again after", "–", seconds(pause.readyMs)],
    ["… requests completed", "–", `${pause.completed}/${pause.total}`],
    [
      "SIGKILL of a tcp server: rank processes alive after",
      "all (315 MB each)",
      `${orphans.aliveAfter}/${orphans.ranks} (gone in ${Math.round(orphans.goneMs)} ms)`,
    ],
  ];
  const table = [
    "| Probe | Before (chaos probe) | Now |",
    "| --- | --- | --- |",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
  console.log(table);
  await writeSection(
    "chaos",
    `## Chaos figures\n\n\`deno task bench:chaos\` (${machine()}): a real \`deno task serve\` ` +
      `(stories260K, tp 2, Workers, default HTTP timeouts: header 10 s, body 30 s, idle 60 s), ` +
      `probed as an operator would. "Before" is what the original chaos probe measured.\n\n${table}`,
    { ...results, orphans },
  );
};

const FLAGS = {
  kills: { type: "string", value: "N", default: "6", help: "rank kills with 8 requests in flight" },
  "idle-kills": {
    type: "string",
    value: "N",
    default: "10",
    help: "kills of an idle group, for the leak figures",
  },
  "stall-seconds": {
    type: "string",
    value: "S",
    default: "3",
    help: "the server's --stall-seconds for the paused-rank probe",
  },
} as const;

const HELP = helpText(
  "deno task bench:chaos",
  "Probes a real `deno task serve` (stories260K, tp 2) with rank kills, a paused rank, long " +
    "prompts, slow and idle clients, deep JSON and a SIGKILL; writes docs/BENCHMARKS.md.",
  FLAGS,
);

const cli = Effect.gen(function* () {
  const parsed = yield* parseFlagTable(Deno.args, FLAGS);
  if (parsed._tag === "Help") return yield* Effect.sync(() => console.log(HELP.trimEnd()));
  if (parsed._tag === "Version") {
    return yield* Effect.sync(() => console.log(versionText().trimEnd()));
  }
  const kills = yield* positiveInt("kills", parsed.values.kills);
  const idle = yield* positiveInt("idle-kills", parsed.values["idle-kills"]);
  const stall = yield* positiveInt("stall-seconds", parsed.values["stall-seconds"]);
  yield* Effect.promise(() => probe(kills, idle, stall));
});
await runMain(cli);
