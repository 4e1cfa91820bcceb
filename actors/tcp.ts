/**
 * The TCP transport: each rank is a process (`deno task rank`) on this or another host. The
 * supervisor dials every rank, authenticates with the shared-secret handshake, then speaks the
 * same protocol as with Workers, one binary frame per message. Collectives meet in the
 * supervisor's hub (one-shot through a reducer): with WebGPU every collective is a host
 * round trip anyway, and decode's all-reduces are a few KB, where one hop each way beats a
 * ring's 2(N−1) hops; ranks need no connections to each other.
 *
 * Without rank addresses it starts `tp` rank processes on loopback itself, with a fresh secret.
 *
 * Liveness: a closed connection is a death at once; otherwise a rank sends a heartbeat every
 * 250 ms and one silent for `heartbeatTimeout` (default 1.5 s) is declared dead.
 */
import { Duration, Effect, Layer, Schedule } from "effect";
import { InProcessGroup } from "../collectives/inprocess.ts";
import type { BackendChoice } from "../gpu/device.ts";
import { GpuOperationError } from "../gpu/errors.ts";
import { closeQuietly, encodeFrame, makeFrameWriter } from "../wire/frames.ts";
import { clientHandshake } from "../wire/handshake.ts";
import { TransportError } from "./errors.ts";
import { currentTelemetry } from "../observe/telemetry.ts";
import { linkRank } from "./rank_link.ts";
import { FromRank, ToRank } from "./remote_protocol.ts";
import { checkPlacements, Transport } from "./transport.ts";
import { startLocalRanks } from "./local_ranks.ts";
import type { RankPlacement } from "../gpu/adapters.ts";

/** Options of {@link TcpTransport}. */
export interface TcpOptions {
  /** `host:port` of each rank, in rank order; omitted: start tp rank processes on loopback. */
  readonly ranks?: readonly string[];
  /** The shared secret's HMAC key (see `loadSecret`); required with `ranks`. */
  readonly key?: CryptoKey;
  /** WebGPU backend the ranks are asked to use (a rank server may override it). */
  readonly backend?: BackendChoice;
  /** How long a collective waits for the slowest rank before failing. Default 5 minutes. */
  readonly collectiveTimeout?: Duration.DurationInput;
  /** Silence after which a rank is declared dead. Default 1.5 s. */
  readonly heartbeatTimeout?: Duration.DurationInput;
  /** Connecting, authenticating and acquiring the rank's device. */
  readonly startTimeout?: Duration.DurationInput;
  /**
   * Each rank's adapter (gpu/adapters.ts `placeRanks`); default: what each rank finds first.
   * Local rank processes get their placement's environment; remote ranks only its name filter.
   */
  readonly placements?: readonly RankPlacement[];
}

/** `host:port` or `[v6]:port`; undefined when malformed. Port 0 only where `anyPort`. */
export const parseAddress = (address: string, anyPort = false) => {
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(address);
  const port = match ? Number(match[2]) : NaN;
  return match && port >= (anyPort ? 0 : 1) && port < 65536
    ? { hostname: match[1], port }
    : undefined;
};

const connectRank = (
  rank: number,
  tp: number,
  address: string,
  key: CryptoKey,
  hub: InProcessGroup,
  options: TcpOptions,
) =>
  Effect.gen(function* () {
    const target = parseAddress(address);
    if (!target) {
      return yield* new TransportError({ message: `rank ${rank}: bad address "${address}"` });
    }
    const conn = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => Deno.connect(target),
        catch: (e) =>
          new TransportError({
            message: `rank ${rank}: cannot connect to ${address}: ${(e as Error).message}`,
          }),
      }),
      (conn) => Effect.sync(() => closeQuietly(conn)),
    );
    // Frames are small and several can be in flight (pipelined steps): without this, Nagle's
    // algorithm holds the next frame until the peer's delayed ACK, ~40 ms a token.
    conn.setNoDelay(true);
    const reader = yield* clientHandshake(conn, key, address).pipe(
      Effect.mapError((e) => new TransportError({ message: `rank ${rank}: ${e.message}` })),
    );
    const writer = makeFrameWriter(conn, address);
    const send = (message: ToRank) =>
      Effect.runFork(writer.write(encodeFrame(ToRank, message)).pipe(Effect.ignore));
    const telemetry = yield* currentTelemetry;
    const link = linkRank(rank, send, hub, () => closeQuietly(conn), telemetry.rankEvent);

    // Every frame from the rank goes to its link; the connection ending is its death.
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(reader.next(FromRank), (m) => Effect.sync(() => link.receive(m))),
      )
        .pipe(
          Effect.catchAll((error) =>
            Effect.sync(() => link.died(`rank ${rank} (${address}) is gone: ${error.message}`))
          ),
        ),
    );
    const silence = Duration.toMillis(options.heartbeatTimeout ?? "1.5 seconds");
    yield* Effect.forkScoped(
      Effect.sync(() => {
        const quiet = performance.now() - link.lastHeard();
        if (quiet > silence) {
          link.died(`rank ${rank} (${address}) sent nothing for ${Math.round(quiet)} ms`);
        }
      }).pipe(Effect.repeat(Schedule.spaced("100 millis"))),
    );
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (!link.isDead()) send({ _tag: "Stop" });
      }).pipe(Effect.zipRight(Effect.sleep(link.isDead() ? "0 millis" : "100 millis")))
    );

    send({
      _tag: "Start",
      rank,
      tp,
      backend: options.backend ?? "auto",
      adapter: options.placements?.[rank]?.dawnName,
      placementNote: options.placements?.[rank]?.description,
      collectiveTimeoutMs: Duration.toMillis(options.collectiveTimeout ?? "5 minutes"),
      tracing: telemetry.tracing,
      logLevel: telemetry.logLevel,
    });
    yield* link.ready;
    return { handle: link.handle, dropConnection: Effect.sync(() => closeQuietly(conn)) };
  });

/**
 * Ranks as processes reached over TCP (see above).
 *
 * @example Two ranks started with `deno task rank --listen … --secret-file tp.secret`
 * ```ts
 * import { Effect } from "effect";
 * import { loadSecret, Supervisor, TcpTransport } from "jsr:@tessera/tp";
 *
 * const key = await Effect.runPromise(loadSecret("tp.secret"));
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   console.log(yield* supervisor.ranks());
 * });
 * const tcp = TcpTransport({ ranks: ["10.0.0.1:7001", "10.0.0.2:7001"], key });
 * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(tcp)));
 * ```
 */
export const TcpTransport = (options: TcpOptions = {}): Layer.Layer<Transport> =>
  Layer.succeed(Transport, {
    name: "tcp",
    spawn: (tp) =>
      Effect.gen(function* () {
        yield* checkPlacements(tp, options.placements, {
          name: "tcp",
          oneProcess: options.ranks !== undefined,
        });
        const local = options.ranks === undefined
          ? yield* startLocalRanks(tp, {
            backend: options.backend,
            env: options.placements?.map((p) => p.processEnv),
          })
          : undefined;
        const addresses = local?.addresses ?? options.ranks ?? [];
        const key = local?.key ?? options.key ??
          (yield* new TransportError({ message: "the tcp transport needs the shared secret" }));
        if (addresses.length !== tp) {
          return yield* new TransportError({
            message: `tp is ${tp} but ${addresses.length} rank addresses were given`,
          });
        }
        const hub = new InProcessGroup(tp, { timeout: options.collectiveTimeout });
        const ranks = yield* Effect.forEach(
          addresses,
          (address, r) => connectRank(r, tp, address, key, hub, options),
          { concurrency: "unbounded" },
        ).pipe(
          Effect.timeoutFail({
            duration: options.startTimeout ?? "60 seconds",
            onTimeout: () =>
              new GpuOperationError({ operation: "rank start", message: "ranks did not start" }),
          }),
        );
        return {
          ranks: ranks.map((r) => r.handle),
          abortStep: (step, failure) => hub.abortStep(step, failure),
          // A local rank is killed outright (SIGKILL); a remote one loses its connection.
          kill: (rank) => local?.kill(rank) ?? ranks[rank]?.dropConnection ?? Effect.void,
          localGpu: () => undefined,
          collectiveStats: () => hub.stats.snapshot(),
        };
      }),
  });
