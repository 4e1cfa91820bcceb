/**
 * What a rank runs, apart from how it is reached. actors/ knows envelopes, transports and the
 * supervisor; the model code a rank executes comes in from outside as rank programs, so actors/
 * imports no layer and no model (imports run families → layers → actors → collectives → gpu).
 */
import type { Effect } from "effect";
import type { CollectiveGroup } from "../collectives/communicator.ts";
import type { Gpu } from "../gpu/device.ts";
import type { RankEvent } from "../observe/rank_events.ts";
import type { Timeline } from "../observe/timeline.ts";
import type { RankCommand, RankReply } from "./protocol.ts";

/** What a rank gives its programs: who it is, its device, its collectives and its reporting. */
export interface RankContext {
  readonly rank: number;
  readonly tp: number;
  readonly gpu: Gpu;
  readonly group: CollectiveGroup;
  /** Records spans when the supervisor traces, else records nothing. */
  readonly timeline: Timeline;
  /** Delivers an event (load progress) to the supervisor ahead of the command's reply. */
  readonly emit: (event: RankEvent) => void;
}

/** A failure a program reports; the rank turns it into a `Failed` reply naming itself. */
export interface RankProgramError {
  readonly _tag: string;
  readonly message: string;
}

/** One program of a rank: the commands it owns, how it runs them, and what it frees. */
export interface RankProgram {
  /** The command tags this program executes; no two programs of a rank share one. */
  readonly commands: ReadonlySet<RankCommand["_tag"]>;
  execute(command: RankCommand): Effect.Effect<RankReply, RankProgramError>;
  /** Frees the device memory the program holds (the device belongs to the rank). */
  release(): void;
}

/** Makes a rank's program once its device is ready. */
export type RankProgramFactory = (context: RankContext) => RankProgram;

/**
 * The programs every rank of a group runs, for each place a rank can live: in this isolate
 * (`factories`) or in a Worker (`workerEntry`, a module that builds its endpoint with the same
 * factories, since a Worker cannot receive code).
 */
export interface RankProgramSet {
  readonly factories: readonly RankProgramFactory[];
  readonly workerEntry: URL;
}
