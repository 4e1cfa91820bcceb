/**
 * `deno task rank`: one rank as a process, for the TCP transport.
 *
 *   deno task rank --listen 127.0.0.1:7001 --secret-file ./tp.secret [--backend auto|dawn|deno]
 *
 * The rank listens (loopback unless told otherwise), authenticates each connection with the
 * shared secret (HMAC challenge, both ways) and serves one supervisor at a time; the supervisor
 * tells it its rank number and tp size. It prints `rank listening on HOST:PORT` on stdout once
 * bound (`:0` picks a free port), logs refused peers and sessions on stderr, and exits 0 on
 * SIGTERM or SIGINT after freeing its device.
 *
 * A server that starts its own ranks (actors/local_ranks.ts) passes `--secret-file -` and
 * `--exit-with-stdin`: the secret comes as stdin's first line, never touching the disk, and the
 * rank exits when stdin closes, which the kernel does when the server dies, even by SIGKILL.
 */
import { Effect, Fiber } from "effect";
import { serveRank } from "../actors/rank_server.ts";
import { parseAddress } from "../actors/tcp.ts";
import { standardRankPrograms } from "../ranks/programs.ts";
import { SecretError } from "../wire/errors.ts";
import { importSecret, loadSecret } from "../wire/handshake.ts";
import { helpText, parseFlagTable, versionText } from "./flag_table.ts";
import { lineReader } from "./line_reader.ts";
import { describe } from "./main.ts";

const FLAGS = {
  listen: {
    type: "string",
    value: "HOST:PORT",
    default: "127.0.0.1:0",
    help: "address to listen on; port 0 picks one (printed)",
  },
  "secret-file": {
    type: "string",
    value: "FILE",
    help:
      "the shared secret (16+ bytes) the supervisor holds; - reads stdin's first line (required)",
  },
  "exit-with-stdin": {
    type: "boolean",
    help: "exit when stdin closes (the server that started this rank is gone)",
  },
  backend: {
    type: "string",
    value: "KIND",
    default: "auto",
    help: "WebGPU implementation: auto (Dawn, else Deno's), dawn or deno",
  },
} as const;

const HELP = helpText(
  "deno task rank",
  "Runs one tensor-parallel rank as a process for --transport tcp.",
  FLAGS,
);

const fail = (message: string): never => {
  console.error(`error: ${message} (see --help)`);
  Deno.exit(2);
};

const parsed = Effect.runSync(
  parseFlagTable(Deno.args, FLAGS).pipe(Effect.catchAll((e) => Effect.sync(() => fail(e.message)))),
);
if (parsed._tag === "Help") {
  console.log(HELP.trimEnd());
  Deno.exit(0);
}
if (parsed._tag === "Version") {
  console.log(versionText().trimEnd());
  Deno.exit(0);
}
const { values } = parsed;

// Port 0 asks for any free port; the bound address is printed.
const listen = parseAddress(values.listen, true) ??
  fail(`--listen must be HOST:PORT, got ${values.listen}`);
if (!values["secret-file"]) fail("--secret-file is required");
const backend = values.backend;
if (backend !== "auto" && backend !== "dawn" && backend !== "deno") {
  fail(`--backend must be auto, dawn or deno, got ${backend}`);
}

const secretFile = values["secret-file"]!;
const stdin = secretFile === "-" || values["exit-with-stdin"]
  ? lineReader(Deno.stdin.readable)
  : undefined;

const secretFromStdin = (lines: ReturnType<typeof lineReader>) =>
  Effect.promise(() => lines.next()).pipe(
    Effect.flatMap((line) =>
      line === null
        ? new SecretError({ source: "stdin", message: "stdin closed before the secret came" })
        : importSecret(new TextEncoder().encode(line.trimEnd()))
    ),
  );

/** Reads stdin to its end (nothing more is sent on it), then shuts the rank down. */
const exitWhenStdinCloses = (lines: ReturnType<typeof lineReader>) =>
  Effect.promise(async () => {
    while ((await lines.next()) !== null) { /* read on */ }
  }).pipe(
    Effect.zipRight(Effect.sync(() => {
      console.error(`rank ${Deno.pid}: stdin closed, so the server that started it is gone`);
      shutdown();
    })),
  );

const program = Effect.gen(function* () {
  const key =
    yield* (stdin && secretFile === "-" ? secretFromStdin(stdin) : loadSecret(secretFile));
  // Only once the secret is read: both read the same stdin.
  if (stdin && values["exit-with-stdin"]) yield* Effect.forkDaemon(exitWhenStdinCloses(stdin));
  yield* serveRank(
    {
      hostname: listen.hostname,
      port: listen.port,
      key,
      programs: standardRankPrograms,
      backend: backend === "auto" ? undefined : backend as "dawn" | "deno",
      log: (line) => console.error(`rank ${Deno.pid}: ${line}`),
    },
    (addr) => console.log(`rank listening on ${addr.hostname}:${addr.port}`),
  );
});

/** Long enough to free the device (a stopping session gets 2 s); then the rank just goes. */
const SHUTDOWN_DEADLINE_MS = 5000;

const fiber = Effect.runFork(program);
let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  setTimeout(() => Deno.exit(0), SHUTDOWN_DEADLINE_MS);
  Effect.runPromise(Fiber.interrupt(fiber)).then(() => Deno.exit(0));
}
Deno.addSignalListener("SIGTERM", shutdown);
Deno.addSignalListener("SIGINT", shutdown);
const exit = await Effect.runPromise(Fiber.await(fiber));
if (exit._tag === "Failure" && !shuttingDown) {
  // One line like the other commands; a usage error exits above with 2, before the rank starts.
  console.error(describe(exit.cause));
  Deno.exit(1);
}
