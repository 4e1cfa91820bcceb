/**
 * The standard rank: stand-alone parallel layers and the decoder model, for every transport.
 * This folder is where actors/ (model-agnostic) meets layers/ and models/.
 */
import type { RankProgramFactory, RankProgramSet } from "../actors/rank_program.ts";
import { parallelLayerProgram } from "../layers/rank_program.ts";
import { decoderModelProgram } from "../models/decoder_program.ts";

/** The programs of a standard rank, in this isolate. */
export const rankProgramFactories: readonly RankProgramFactory[] = [
  parallelLayerProgram,
  decoderModelProgram,
];

/** The standard rank's programs, in this isolate or in a Worker started from `rank_worker.ts`. */
export const standardRankPrograms: RankProgramSet = {
  factories: rankProgramFactories,
  workerEntry: new URL("./rank_worker.ts", import.meta.url),
};
