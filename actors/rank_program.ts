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
  /** This rank's index, 0 to tp - 1. */
  readonly rank: number;
  /** The group's size. */
  readonly tp: number;
  /** The rank's own device. */
  readonly gpu: Gpu;
  /** Where the rank's collectives meet the other ranks'. */
  readonly group: CollectiveGroup;
  /** Records spans when the supervisor traces, else records nothing. */
  readonly timeline: Timeline;
  /** Delivers an event (load progress) to the supervisor ahead of the command's reply. */
  readonly emit: (event: RankEvent) => void;
}

/** A failure a program reports; the rank turns it into a `Failed` reply naming itself. */
export interface RankProgramError {
  /** The error's tag, sent as the `Failed` reply's reason. */
  readonly _tag: string;
  /** What went wrong, sent as the `Failed` reply's message. */
  readonly message: string;
}

/** One program of a rank: the commands it owns, how it runs them, and what it frees. */
export interface RankProgram {
  /** The command tags this program executes; no two programs of a rank share one. */
  readonly commands: ReadonlySet<RankCommand["_tag"]>;
  /** Runs one of its commands and gives the reply. */
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
  /** The programs of a rank in this isolate. */
  readonly factories: readonly RankProgramFactory[];
  /** The module a rank Worker starts: it builds its endpoint with the same factories. */
  readonly workerEntry: URL;
}
