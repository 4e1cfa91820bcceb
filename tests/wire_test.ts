import assert from "node:assert/strict";
import { Effect, Either, Schema } from "effect";
import { CollectiveResult, fromPayload, toPayload } from "../collectives/protocol.ts";
import { tensor } from "../collectives/tensor.ts";
import type { SecretError, WireError } from "../wire/errors.ts";
import {
  type ByteSource,
  closeQuietly,
  decodeFrameBody,
  encodeFrame,
  FrameReader,
  makeFrameWriter,
} from "../wire/frames.ts";
import {
  clientHandshake,
  importSecret,
  loadSecret,
  PROTOCOL_VERSION,
  serverHandshake,
} from "../wire/handshake.ts";

const Blob = Schema.TaggedStruct("Blob", {
  name: Schema.String,
  shape: Schema.Array(Schema.NonNegativeInt),
  small: Schema.Uint8ArrayFromSelf,
  weights: Schema.Uint8ArrayFromSelf,
});
type Blob = typeof Blob.Type;

const blob = (name: string, smallLength: number, floats: number): Blob => ({
  _tag: "Blob",
  name,
  shape: [floats],
  small: Uint8Array.from({ length: smallLength }, (_, i) => (i * 37 + name.length) & 0xff),
  weights: new Uint8Array(Float32Array.from({ length: floats }, (_, i) => i / 3 - 1).buffer),
});

const attempt = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.either(effect));

/** Asserts a WireError (or SecretError) left with the expected reason and message. */
const assertFails = (
  outcome: Either.Either<unknown, WireError>,
  reason: WireError["reason"],
  message: RegExp,
) => {
  assert.ok(Either.isLeft(outcome), `expected ${reason}, got a value`);
  assert.equal(outcome.left._tag, "WireError");
  assert.equal(outcome.left.reason, reason, outcome.left.message);
  assert.match(outcome.left.message, message);
};

/** An in-memory connection that hands out at most `chunk` bytes per read. */
const memorySource = (bytes: Uint8Array, chunk: number): ByteSource => {
  let at = 0;
  return {
    read: (p) => {
      if (at === bytes.length) return Promise.resolve(null);
      const n = Math.min(p.length, chunk, bytes.length - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
};

const concatBytes = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};

/** A frame body with a hand-written header, for the malformed cases. */
const rawBody = (header: string, binary = new Uint8Array(0)) => {
  const headerBytes = new TextEncoder().encode(header);
  const binaryStart = (4 + headerBytes.length + 7) & ~7;
  const body = new Uint8Array(binaryStart + binary.length);
  new DataView(body.buffer).setUint32(0, headerBytes.length, true);
  body.set(headerBytes, 4);
  body.set(binary, binaryStart);
  return body;
};

/** A whole frame around a body. */
const frameOf = (body: Uint8Array) => {
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length, true);
  frame.set(body, 4);
  return frame;
};

Deno.test("a frame round-trips odd-length byte fields as aligned binary, not JSON", () => {
  const message = blob("layer.0", 13, 7); // 13 bytes, then 28 bytes padded to offset 16
  const frame = encodeFrame(Blob, message);
  const body = frame.slice(4); // fresh buffer: aligned, so decoding must not copy
  assert.equal(new DataView(frame.buffer).getUint32(0, true), body.length);
  const header = new TextDecoder().decode(body.subarray(4, 4 + body[0]));
  assert.match(header, /"small":\{"\$bytes":\[0,13\]\}/);
  assert.match(header, /"weights":\{"\$bytes":\[16,28\]\}/);

  for (const input of [body, frame.subarray(4)]) { // the second is misaligned: one copy
    const decoded = Either.getOrThrow(decodeFrameBody(Blob, input, "test"));
    assert.deepEqual(decoded.small, message.small);
    assert.deepEqual(decoded.weights, message.weights);
    assert.equal(decoded.weights.byteOffset % 8, 0);
    if (input === body) assert.equal(decoded.weights.buffer, body.buffer);
    const floats = new Float32Array(decoded.weights.buffer, decoded.weights.byteOffset, 7);
    assert.deepEqual(floats, new Float32Array(message.weights.buffer));
    assert.deepEqual({ ...decoded, small: 0, weights: 0 }, { ...message, small: 0, weights: 0 });
  }
});

Deno.test("the collective protocol's class messages cross the wire intact", () => {
  const t = tensor([2, 3], Float32Array.from([1.5, -2, 3.25, 0, 1e-7, 42]));
  const result = new CollectiveResult({ step: 4, seq: 9, tensor: toPayload(t) });
  const decoded = Either.getOrThrow(
    decodeFrameBody(CollectiveResult, encodeFrame(CollectiveResult, result).slice(4), "rank 1"),
  );
  assert.ok(decoded instanceof CollectiveResult);
  assert.deepEqual(fromPayload(decoded.tensor), t);
});

Deno.test("frames back to back are read whole in 1-, 7- and 65536-byte chunks", async () => {
  const messages = [blob("a", 0, 0), blob("b", 3, 1), blob("big", 5, 17_000), blob("c", 64, 2)];
  const stream = concatBytes(messages.map((m) => encodeFrame(Blob, m)));
  for (const chunk of [1, 7, 65536]) {
    const reader = new FrameReader(memorySource(stream, chunk), `chunk ${chunk}`);
    for (const expected of messages) {
      const got = await Effect.runPromise(reader.next(Blob));
      assert.equal(got.name, expected.name);
      assert.deepEqual(got.small, expected.small);
      assert.deepEqual(got.weights, expected.weights);
    }
    assertFails(await attempt(reader.next(Blob)), "Closed", /closed the connection/);
  }
});

Deno.test("an oversized frame is refused from its prefix, before its body is read", async () => {
  let reads = 0;
  const source: ByteSource = {
    read: (p) => {
      if (reads++ > 0) throw new Error("the body was read");
      new DataView(p.buffer, p.byteOffset).setUint32(0, 2_000_000_000, true);
      return Promise.resolve(4);
    },
  };
  const reader = new FrameReader(source, "rank 3", 1 << 20);
  assertFails(await attempt(reader.next(Blob)), "TooLarge", /2000000000-byte frame.*1048576/);
  assertFails(await attempt(reader.next(Blob)), "TooLarge", /rank 3/); // framing is lost
  assert.equal(reads, 1);
});

Deno.test("a stream ending mid-frame is Malformed; at a frame boundary, Closed", async () => {
  const frame = encodeFrame(Blob, blob("x", 10, 10));
  const bodyLength = frame.length - 4;
  const cases: [Uint8Array, RegExp][] = [
    [frame.subarray(0, 2), /inside a length prefix/],
    [frame.subarray(0, -1), new RegExp(`mid-frame \\(${bodyLength - 1} of ${bodyLength} bytes`)],
  ];
  for (const [bytes, message] of cases) {
    assertFails(
      await attempt(new FrameReader(memorySource(bytes, 7), "peer").next(Blob)),
      "Malformed",
      message,
    );
  }
  const empty = new FrameReader(memorySource(new Uint8Array(0), 7), "peer");
  assertFails(await attempt(empty.next(Blob)), "Closed", /peer closed/);
});

Deno.test("a frame that does not arrive in time fails with Timeout", async () => {
  const silent: ByteSource = { read: () => new Promise(() => {}) };
  const reader = new FrameReader(silent, "rank 0");
  const started = performance.now();
  assertFails(await attempt(reader.next(Blob, { timeoutMs: 50 })), "Timeout", /within 50 ms/);
  assert.ok(performance.now() - started < 1000);
});

Deno.test("malformed bodies are rejected with a message naming the problem", () => {
  const eight = new Uint8Array(8);
  const good = '{"_tag":"Blob","name":"n","shape":[],"small":{"$bytes":[0,8]},"weights":';
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(3), /3 bytes, too short/],
    [Uint8Array.from([200, 0, 0, 0, 1, 2]), /header length 200 overruns the 6-byte body/],
    [rawBody("{not json"), /not valid JSON/],
    [concatBytes([Uint8Array.from([2, 0, 0, 0, 0xc3, 0x28]), new Uint8Array(2)]), /UTF-8/],
    [rawBody(good + '{"$bytes":[8,1]}}', eight), /\[8,1\] is out of bounds of the 8-byte/],
    [rawBody(good + '{"$bytes":[0,9]}}', eight), /out of bounds/],
    [rawBody(good + '{"$bytes":[0]}}', eight), /bad \$bytes reference \{"\$bytes":\[0\]\}/],
    [rawBody(good + '{"$bytes":[0,1],"x":1}}', eight), /bad \$bytes reference/],
    [rawBody(good + '{"$bytes":[-8,1]}}', eight), /bad \$bytes reference/],
    [rawBody(good + '{"$bytes":[0.5,1]}}', eight), /bad \$bytes reference/],
    [rawBody(good + '{"$bytes":["0",1]}}', eight), /bad \$bytes reference/],
    [rawBody(good + '{"$bytes":[4,1]}}', eight), /offset 4 is not 8-byte aligned/],
    [rawBody(good + "[1,2,3]}", eight), /does not match its schema[\s\S]*weights/],
    [rawBody('{"_tag":"Blob","name":"n"}'), /does not match its schema[\s\S]*shape/],
  ];
  for (const [body, message] of cases) {
    assertFails(decodeFrameBody(Blob, body, "rank 2"), "Malformed", message);
  }
});

Deno.test("encodeFrame refuses a message that would forge a $bytes reference", () => {
  const Loose = Schema.Struct({
    meta: Schema.Record({ key: Schema.String, value: Schema.Unknown }),
  });
  assert.throws(() => encodeFrame(Loose, { meta: { $bytes: [0, 1] } }), /reserved key/);
});

Deno.test("concurrent writers on one connection never interleave their frames", async () => {
  const written: Uint8Array[] = [];
  const trickle = { // partial, slow writes: at most 13 bytes each, after a tick
    write: async (p: Uint8Array) => {
      await new Promise((resolve) => setTimeout(resolve, 0));
      written.push(p.slice(0, 13));
      return Math.min(13, p.length);
    },
  };
  const writer = makeFrameWriter(trickle, "rank 1");
  const messages = Array.from({ length: 8 }, (_, i) => blob(`m${i}`, i * 3, i));
  await Effect.runPromise(
    Effect.all(messages.map((m) => writer.write(encodeFrame(Blob, m))), {
      concurrency: "unbounded",
    }),
  );
  const reader = new FrameReader(memorySource(concatBytes(written), 65536), "rank 1");
  for (const expected of messages) {
    const got = await Effect.runPromise(reader.next(Blob));
    assert.equal(got.name, expected.name);
    assert.deepEqual(got.small, expected.small);
  }
});

// ---- handshake over real loopback TCP ----

const secret = (text: string) => Effect.runPromise(importSecret(new TextEncoder().encode(text)));

/** A connected loopback pair; both ends and the listener are closed afterwards. */
const withLoopback = async (body: (server: Deno.Conn, client: Deno.Conn) => Promise<void>) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [server, client] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  ]);
  try {
    await body(server, client);
  } finally {
    closeQuietly(server);
    closeQuietly(client);
    listener.close();
  }
};

Deno.test("handshake with the same secret succeeds and the reader carries on", async () => {
  const key = await secret("correct horse battery staple");
  await withLoopback(async (server, client) => {
    const [serverReader, clientReader] = await Promise.all([
      Effect.runPromise(serverHandshake(server, key, "supervisor")),
      Effect.runPromise(clientHandshake(client, key, "rank 0")),
    ]);
    // The first real frame goes through the readers the handshakes returned.
    const frame = encodeFrame(Blob, blob("after", 9, 3));
    await Effect.runPromise(makeFrameWriter(server, "supervisor").write(frame));
    assert.equal((await Effect.runPromise(clientReader.next(Blob))).name, "after");
    await Effect.runPromise(makeFrameWriter(client, "rank 0").write(frame));
    assert.equal((await Effect.runPromise(serverReader.next(Blob))).name, "after");
  });
});

Deno.test("handshake with different secrets fails AuthFailed on both sides", async () => {
  const [rankKey, supervisorKey] = await Promise.all([
    secret("the rank's secret, 32 bytes long"),
    secret("the supervisor's different one.."),
  ]);
  await withLoopback(async (server, client) => {
    const [atServer, atClient] = await Promise.all([
      attempt(serverHandshake(server, rankKey, "supervisor")),
      attempt(clientHandshake(client, supervisorKey, "rank 0")),
    ]);
    assertFails(atServer, "AuthFailed", /supervisor failed to prove/);
    assertFails(atClient, "AuthFailed", /rank 0 closed the connection after our proof/);
    assert.throws(() => server.close(), Deno.errors.BadResource); // the server hung up
  });
});

Deno.test("a silent client makes the server's handshake time out at its deadline", async () => {
  const key = await secret("0123456789abcdef");
  await withLoopback(async (server) => {
    const started = performance.now();
    const outcome = await attempt(serverHandshake(server, key, "mute", { deadlineMs: 300 }));
    const elapsed = performance.now() - started;
    assertFails(outcome, "Timeout", /mute did not finish within 300 ms/);
    assert.ok(elapsed >= 290 && elapsed < 1500, `took ${elapsed} ms`);
  });
});

Deno.test("a client that sends garbage fails the handshake (Malformed or TooLarge)", async () => {
  const key = await secret("0123456789abcdef");
  const NotAProof = Schema.Struct({ _tag: Schema.Literal("Proof") });
  const garbage: [Uint8Array, WireError["reason"], RegExp][] = [
    [frameOf(rawBody("hello?")), "Malformed", /not valid JSON/],
    [encodeFrame(NotAProof, { _tag: "Proof" }), "Malformed", /does not match its schema.*mac/s],
    [new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), "TooLarge", /limit is 4096/],
  ];
  for (const [bytes, reason, message] of garbage) {
    await withLoopback(async (server, client) => {
      await client.write(bytes);
      assertFails(await attempt(serverHandshake(server, key, "junk")), reason, message);
    });
  }
});

Deno.test("loadSecret trims the newline and rejects short or missing files by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = `${dir}/good`, short = `${dir}/short`;
    await Deno.writeTextFile(good, "0123456789abcdef0123\n");
    await Deno.writeTextFile(short, "tooshort \n");
    const loaded = await Effect.runPromise(loadSecret(good));
    const direct = await secret("0123456789abcdef0123");
    const data = new TextEncoder().encode(PROTOCOL_VERSION);
    assert.deepEqual(
      new Uint8Array(await crypto.subtle.sign("HMAC", loaded, data)),
      new Uint8Array(await crypto.subtle.sign("HMAC", direct, data)),
    );

    const failures: [string, RegExp][] = [
      [short, /secret file .*short is 8 bytes; it needs at least 16/],
      [`${dir}/missing`, /secret file .*missing does not exist/],
    ];
    for (const [path, message] of failures) {
      const outcome: Either.Either<CryptoKey, SecretError> = await attempt(loadSecret(path));
      assert.ok(Either.isLeft(outcome));
      assert.equal(outcome.left._tag, "SecretError");
      assert.equal(outcome.left.source, path);
      assert.match(outcome.left.message, message);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
