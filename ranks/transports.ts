/**
 * The transports with the standard rank programs: what applications, the CLI and the tests
 * use. actors/ defines the transports for any program set; these bind the standard one unless
 * given another.
 */
import type { Layer } from "effect";
import * as inProcess from "../actors/inprocess.ts";
import type { RankProgramSet } from "../actors/rank_program.ts";
import type { Transport } from "../actors/transport.ts";
import * as workers from "../actors/workers.ts";
import { standardRankPrograms } from "./programs.ts";

export type { InProcessOptions } from "../actors/inprocess.ts";
export type { WorkersOptions } from "../actors/workers.ts";

/**
 * Every rank a fiber of this isolate with its own device, running `programs` (the standard
 * ones by default; see actors/inprocess.ts).
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
export const InProcessTransport = (
  options: inProcess.InProcessOptions = {},
  programs: RankProgramSet = standardRankPrograms,
): Layer.Layer<Transport> => inProcess.InProcessTransport(programs, options);

/**
 * Every rank a Worker (its own isolate and Dawn event loop) running `programs` (the standard
 * ones by default), collectives through shared memory (see actors/workers.ts).
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
export const WorkersTransport = (
  options: workers.WorkersOptions = {},
  programs: RankProgramSet = standardRankPrograms,
): Layer.Layer<Transport> => workers.WorkersTransport(programs, options);
