/**
 * Rank processes on this host for the TCP transport when no addresses are given: `tp` children
 * running cli/rank.ts on loopback with free ports and a fresh random secret. Each child gets the
 * secret as its stdin's first line (it is never written to disk) and exits when its stdin
 * closes, so the ranks die with this process even when it is killed with SIGKILL and has no
 * chance to stop them. Closing the scope stops them (SIGTERM, then SIGKILL after 2 s).
 */
import { Effect } from "effect";
import type { BackendChoice } from "../gpu/device.ts";
import { importSecret } from "../wire/handshake.ts";
import { TransportError } from "./errors.ts";

const RANK_CLI = new URL("../cli/rank.ts", import.meta.url).href;

/** Reads the child's stdout until it says where it listens; the rest is drained unread. */
const listeningAddress = async (stdout: ReadableStream<Uint8Array>) => {
  const lines = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await lines.read();
    if (done) throw new Error("exited before listening");
    text += value;
    const match = /listening on (\S+)/.exec(text);
    if (match) {
      (async () => {
        while (!(await lines.read()).done) { /* drain */ }
      })().catch(() => {});
      return match[1];
    }
  }
};

const spawnRankProcess = (
  rank: number,
  tp: number,
  secret: string,
  backend: BackendChoice,
  placementEnv: Readonly<Record<string, string>>,
) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const threads = Math.max(1, Math.floor(navigator.hardwareConcurrency / tp));
      const args = [
        "run",
        "-A",
        "--v8-flags=--expose-gc",
        RANK_CLI,
        "--listen",
        "127.0.0.1:0",
        "--secret-file",
        "-",
        "--exit-with-stdin",
      ];
      if (backend !== "auto") args.push("--backend", backend);
      const child = new Deno.Command(Deno.execPath(), {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
        // On a CPU renderer each device starts one thread per core; share the cores out.
        env: {
          ...(Deno.env.get("LP_NUM_THREADS") ? {} : { LP_NUM_THREADS: String(threads) }),
          // What shows the Vulkan loader only this rank's adapter (gpu/adapters.ts).
          ...placementEnv,
        },
      }).spawn();
      // The pipe stays open while this process lives: its end is the rank's cue to exit.
      const stdin = child.stdin.getWriter();
      await stdin.write(new TextEncoder().encode(`${secret}\n`)).catch(() => {});
      return { child, stdin };
    }),
    ({ child, stdin }) =>
      Effect.promise(async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }, 2000);
        await child.status;
        clearTimeout(timer);
        await stdin.close().catch(() => {});
      }),
  ).pipe(
    Effect.flatMap(({ child }) =>
      Effect.tryPromise({
        try: () => listeningAddress(child.stdout),
        catch: (e) =>
          new TransportError({ message: `rank ${rank} process: ${(e as Error).message}` }),
      }).pipe(Effect.map((address) => ({ child, address })))
    ),
  );

export const startLocalRanks = (
  tp: number,
  options: {
    backend?: BackendChoice;
    /** Each rank process's extra environment: its adapter placement's. */
    env?: ReadonlyArray<Readonly<Record<string, string>>>;
  } = {},
) =>
  Effect.gen(function* () {
    const secret = Array.from(crypto.getRandomValues(new Uint8Array(32)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const key = yield* importSecret(new TextEncoder().encode(secret)).pipe(
      Effect.mapError((e) => new TransportError({ message: e.message })),
    );
    const ranks = yield* Effect.forEach(
      Array.from({ length: tp }, (_, r) => r),
      (r) => spawnRankProcess(r, tp, secret, options.backend ?? "auto", options.env?.[r] ?? {}),
      { concurrency: "unbounded" },
    );
    return {
      key,
      addresses: ranks.map((r) => r.address),
      /** Each rank's process id, in rank order. */
      pids: ranks.map((r) => r.child.pid),
      /**
       * Sends `signal` to rank's process: SIGKILL (the default) as a crash would, SIGSTOP to
       * freeze it with its connection still open (a hung host).
       */
      kill: (rank: number, signal: Deno.Signal = "SIGKILL") =>
        Effect.sync(() => {
          try {
            ranks[rank]?.child.kill(signal);
          } catch { /* already gone */ }
        }),
    };
  });
