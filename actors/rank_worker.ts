/**
 * The entry point of a rank Worker: one rank endpoint whose messages travel over the Worker's
 * port. Each Worker has its own isolate, so Dawn gets its own native event loop per rank.
 */
/// <reference lib="deno.worker" />
import { Schema } from "effect";
import { makeRankEndpoint } from "./rank_endpoint.ts";
import { FromRank, ToRank } from "./remote_protocol.ts";

const encode = Schema.encodeSync(FromRank);
const decode = Schema.decodeUnknownEither(ToRank);

const endpoint = makeRankEndpoint((message) => self.postMessage(encode(message)));

self.onmessage = (event: MessageEvent) => {
  const decoded = decode(event.data);
  if (decoded._tag === "Left") {
    console.error(`rank worker: dropped a malformed message: ${decoded.left.message}`);
    return;
  }
  endpoint.receive(decoded.right);
  if (decoded.right._tag === "Stop") endpoint.stop().finally(() => self.close());
};
