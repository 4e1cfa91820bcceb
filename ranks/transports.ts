/**
 * The transports with the standard rank programs: what applications, the CLI and the tests
 * use. actors/ defines the transports for any program set; these bind the standard one.
 */
import type { Layer } from "effect";
import * as inProcess from "../actors/inprocess.ts";
import type { RankProgramSet } from "../actors/rank_program.ts";
import type { Transport } from "../actors/transport.ts";
import * as workers from "../actors/workers.ts";
import { standardRankPrograms } from "./programs.ts";

type WithPrograms<O> = Omit<O, "programs"> & { readonly programs?: RankProgramSet };

/** Options of {@link InProcessTransport}: the actors' options, programs defaulting to the standard set. */
export type InProcessOptions = WithPrograms<inProcess.InProcessOptions>;

/** Options of {@link WorkersTransport}: the actors' options, programs defaulting to the standard set. */
export type WorkersOptions = WithPrograms<workers.WorkersOptions>;

/**
 * Every rank a fiber of this isolate with its own device, running the standard programs
 * (see actors/inprocess.ts).
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { InProcessTransport, Supervisor } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 2 });
 *   console.log(yield* supervisor.ranks());
 * });
 * await Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(InProcessTransport())));
 * ```
 */
export const InProcessTransport = (options: InProcessOptions = {}): Layer.Layer<Transport> =>
  inProcess.InProcessTransport({ ...options, programs: options.programs ?? standardRankPrograms });

/**
 * Every rank a Worker (its own isolate and Dawn event loop) running the standard programs,
 * collectives through shared memory (see actors/workers.ts).
 *
 * @example
 * ```ts
 * import { Effect } from "effect";
 * import { Supervisor, WorkersTransport } from "jsr:@tessera/tp";
 *
 * const program = Effect.gen(function* () {
 *   const supervisor = yield* Supervisor.make({ tp: 4 });
 *   console.log(yield* supervisor.ranks());
 * });
 * await Effect.runPromise(
 *   Effect.scoped(program).pipe(Effect.provide(WorkersTransport({ startTimeout: "2 minutes" }))),
 * );
 * ```
 */
export const WorkersTransport = (options: WorkersOptions = {}): Layer.Layer<Transport> =>
  workers.WorkersTransport({ ...options, programs: options.programs ?? standardRankPrograms });
