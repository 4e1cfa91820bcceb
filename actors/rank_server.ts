/**
 * A rank as a process: listens on TCP, authenticates each connection with the shared-secret
 * handshake, and serves one supervisor session at a time as a rank endpoint. Frames are
 * Schema-typed binary messages (wire/frames.ts). An unauthenticated, slow or malformed peer is
 * refused and logged; it cannot crash the rank or hold up the session being served. When the
 * supervisor's connection ends, the rank frees its device and waits for the next session.
 * The rank's device and shards live in a Worker of this process, and this thread only relays
 * frames and sends heartbeats: a rank busy on its device (Dawn's event polling keeps its thread
 * hot) must not starve the heartbeat that tells the supervisor it is alive. The Worker is kept
 * from one session to the next (actors/rank_worker_pool.ts).
 */
import { Effect } from "effect";
import type { BackendChoice } from "../gpu/device.ts";
import type { WireError } from "../wire/errors.ts";
import { closeQuietly, encodeFrame, type FrameReader, makeFrameWriter } from "../wire/frames.ts";
import { serverHandshake } from "../wire/handshake.ts";
import type { RankProgramSet } from "./rank_program.ts";
import { makeRankWorkerPool, type RankWorkerPool } from "./rank_worker_pool.ts";
import { FromRank, ToRank } from "./remote_protocol.ts";

/** Options of {@link serveRank}. */
export interface RankServerOptions {
  /** What this rank runs; its `workerEntry` is the module of the rank's Worker. */
  readonly programs: RankProgramSet;
  /** Interface to listen on. */
  readonly hostname: string;
  /** TCP port to listen on. */
  readonly port: number;
  /** The shared secret's HMAC key (see `loadSecret`) that supervisors must prove. */
  readonly key: CryptoKey;
  /** Overrides the backend the supervisor asks for (a host without Dawn, for example). */
  readonly backend?: BackendChoice;
  /** How long a peer has to complete the handshake. Default 5000 ms. */
  readonly handshakeDeadlineMs?: number;
  /** Interval between heartbeats sent to the supervisor. Default 250 ms. */
  readonly heartbeatMs?: number;
  /** Receives one line per session event and refused peer. */
  readonly log?: (line: string) => void;
}

const peerOf = (conn: Deno.Conn) => {
  const addr = conn.remoteAddr as Deno.NetAddr;
  return `${addr.hostname}:${addr.port}`;
};

/** Serves one authenticated supervisor until its connection ends. */
const session = (
  conn: Deno.Conn,
  reader: FrameReader,
  peer: string,
  pool: RankWorkerPool,
  options: RankServerOptions,
) => {
  const writer = makeFrameWriter(conn, peer);
  const post = (message: FromRank) => Effect.runFork(writer.write(encodeFrame(FromRank, message)));
  let heartbeat: ReturnType<typeof setInterval> | undefined;
  return Effect.gen(function* () {
    const rank = yield* pool.session({
      onMessage: post,
      onCrash: (why) => {
        options.log?.(`session with ${peer} failed: the rank: ${why}`);
        closeQuietly(conn); // the supervisor sees the rank die
      },
    });
    options.log?.(`session with ${peer} started`);
    const why = yield* Effect.gen(function* () {
      while (true) {
        const message = yield* reader.next(ToRank);
        if (message._tag === "Start") {
          const id = message.rank;
          heartbeat ??= setInterval(
            () => post({ _tag: "Heartbeat", rank: id }),
            options.heartbeatMs ?? 250,
          );
        }
        // The session's end stops the rank (below), once.
        if (message._tag === "Stop") return "stopped";
        rank.post(
          message._tag === "Start" && options.backend
            ? { ...message, backend: options.backend }
            : message,
        );
      }
    }).pipe(Effect.catchAll((error: WireError) => Effect.succeed(error.message)));
    options.log?.(`session with ${peer} ended: ${why}`);
    // However the session ends (even by interruption), closing its scope has the rank free
    // its device; its Worker then waits for the next session.
  }).pipe(
    Effect.ensuring(Effect.sync(() => clearInterval(heartbeat))),
    Effect.scoped,
  );
};

/**
 * Listens until interrupted. Prints nothing itself; `onListening` receives the bound address
 * (port 0 picks a free port).
 */
export const serveRank = (
  options: RankServerOptions,
  onListening: (addr: Deno.NetAddr) => void,
): Effect.Effect<never> =>
  Effect.acquireRelease(
    Effect.sync(() => Deno.listen({ hostname: options.hostname, port: options.port })),
    (listener) => Effect.sync(() => listener.close()),
  ).pipe(
    Effect.flatMap((listener) =>
      Effect.gen(function* () {
        // One rank Worker for every session in turn: ending Workers leaks (see the pool).
        const pool = yield* makeRankWorkerPool({ entry: options.programs.workerEntry });
        onListening(listener.addr as Deno.NetAddr);
        let busy = false;
        while (true) {
          const conn = yield* Effect.promise(() => listener.accept());
          conn.setNoDelay(true); // small frames, several in flight: see actors/tcp.ts
          const peer = peerOf(conn);
          // Each connection authenticates on its own fiber, so a silent peer blocks no one.
          yield* Effect.forkScoped(
            Effect.gen(function* () {
              const reader = yield* serverHandshake(conn, options.key, peer, {
                deadlineMs: options.handshakeDeadlineMs,
              });
              if (busy) return options.log?.(`refused ${peer}: already serving a supervisor`);
              busy = true;
              yield* session(conn, reader, peer, pool, options).pipe(
                Effect.ensuring(Effect.sync(() => (busy = false))),
              );
            }).pipe(
              Effect.catchAll((error) =>
                Effect.sync(() => options.log?.(`refused ${peer}: ${error.message}`))
              ),
              Effect.ensuring(Effect.sync(() => closeQuietly(conn))),
            ),
          );
        }
      })
    ),
    Effect.scoped,
  );
