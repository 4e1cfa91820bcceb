/**
 * The entry point of a rank Worker (the standard program set's `workerEntry`): one rank endpoint per session, whose messages travel over
 * the Worker's port. Each Worker has its own isolate, so Dawn gets its own native event loop per
 * rank. The Worker outlives its sessions (actors/rank_worker_pool.ts): on `Stop` the rank frees
 * its device and Dawn's instance, answers `Stopped`, and waits for the next `Start`.
 */
/// <reference lib="deno.worker" />
import { Effect, Schema } from "effect";
import { makeRankEndpoint } from "../actors/rank_endpoint.ts";
import { FromRank, ToRank } from "../actors/remote_protocol.ts";
import { releaseDawnInstance } from "../gpu/device.ts";
import { logLevelFromEnv } from "../observe/logging.ts";
import { rankProgramFactories } from "./programs.ts";

const encode = Schema.encodeSync(FromRank);
const decode = Schema.decodeUnknownEither(ToRank);
const post = (message: FromRank) => self.postMessage(encode(message));

let endpoint = makeRankEndpoint(post, rankProgramFactories);
let stopping = false;

/** Frees the session's device, then Dawn's instance (its threads and memfds), then says so. */
const stopSession = Effect.promise(() => endpoint.stop()).pipe(
  Effect.zipRight(releaseDawnInstance()),
  Effect.tap((released) =>
    // Only worth a line when debugging leaks: at exit (the common case) the threads go anyway.
    released || logLevelFromEnv() !== "debug"
      ? Effect.void
      : Effect.sync(() =>
        console.error("rank worker: Dawn's instance is still in use; its threads stay")
      )
  ),
  Effect.ensuring(Effect.sync(() => {
    endpoint = makeRankEndpoint(post, rankProgramFactories);
    stopping = false;
    post({ _tag: "Stopped" });
  })),
);

self.onmessage = (event: MessageEvent) => {
  const decoded = decode(event.data);
  if (decoded._tag === "Left") {
    console.error(`rank worker: dropped a malformed message: ${decoded.left.message}`);
    return;
  }
  // What the ending session's supervisor still sends (collective results) is not news.
  if (stopping) return;
  if (decoded.right._tag !== "Stop") return endpoint.receive(decoded.right);
  stopping = true;
  Effect.runFork(stopSession);
};
