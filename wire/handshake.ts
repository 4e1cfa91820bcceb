/**
 * Mutual shared-secret authentication, before any other message on a connection.
 *
 *   server (a rank, listens)                         client (the supervisor, dials)
 *   Challenge { version: "tessera/1", nonce: Ns }  →
 *                           ←  Proof { mac: HMAC(k, "tessera/1 client\0" ++ Ns), nonce: Nc }
 *   Welcome { mac: HMAC(k, "tessera/1 server\0" ++ Nc) }  →   (on a bad proof: just close)
 *
 * Each side proves knowledge of the secret over the other's fresh nonce, so neither a replayed
 * nor a reflected message passes. The secret itself never crosses the wire. Frames are capped
 * small and the whole exchange has a deadline, so a silent or hostile peer cannot hold us up.
 * A failed handshake closes the connection itself; on success the caller keeps the returned
 * reader (it may already hold the peer's next frames).
 */
import { Duration, Effect, Schema } from "effect";
import { SecretError, WireError } from "./errors.ts";
import { type ByteSink, type ByteSource, encodeFrame, FrameReader, writeFrame } from "./frames.ts";

export const PROTOCOL_VERSION = "tessera/1";
export const DEFAULT_HANDSHAKE_DEADLINE_MS = 5000;
export const MIN_SECRET_BYTES = 16;
const HANDSHAKE_MAX_FRAME_BYTES = 4096;
const NONCE_BYTES = 32;
const MAC_BYTES = 32; // SHA-256

const bytesOfLength = (n: number) =>
  Schema.Uint8ArrayFromSelf.pipe(
    Schema.filter((b) => b.length === n || `expected ${n} bytes, got ${b.length}`),
  );

export const Challenge = Schema.TaggedStruct("Challenge", {
  version: Schema.Literal(PROTOCOL_VERSION),
  nonce: bytesOfLength(NONCE_BYTES),
});
export const Proof = Schema.TaggedStruct("Proof", {
  mac: bytesOfLength(MAC_BYTES),
  nonce: bytesOfLength(NONCE_BYTES),
});
export const Welcome = Schema.TaggedStruct("Welcome", { mac: bytesOfLength(MAC_BYTES) });

/** A connection the handshake can read, write and, on failure, close: e.g. a Deno.Conn. */
export interface HandshakeConn extends ByteSource, ByteSink {
  close(): void;
}

export interface HandshakeOptions {
  /** The whole exchange must finish within this; default 5000 ms. */
  readonly deadlineMs?: number;
  /** The frame limit of the returned reader, for the traffic after the handshake. */
  readonly maxFrameBytes?: number;
}

type Side = "client" | "server";

/** What `side` signs: a label that binds the version and direction, then the other's nonce. */
const signedData = (side: Side, nonce: Uint8Array): Uint8Array<ArrayBuffer> => {
  const label = new TextEncoder().encode(`${PROTOCOL_VERSION} ${side}\0`);
  const data = new Uint8Array(label.length + nonce.length);
  data.set(label);
  data.set(nonce, label.length);
  return data;
};

const cryptoError = (peer: string) => (cause: unknown) =>
  new WireError({ peer, reason: "AuthFailed", message: `HMAC with ${peer} failed: ${cause}` });

const sign = (key: CryptoKey, side: Side, nonce: Uint8Array, peer: string) =>
  Effect.tryPromise({
    try: () => crypto.subtle.sign("HMAC", key, signedData(side, nonce)),
    catch: cryptoError(peer),
  }).pipe(Effect.map((mac) => new Uint8Array(mac)));

/** Constant-time check of `mac` (crypto.subtle.verify, not a byte compare). */
const verify = (key: CryptoKey, side: Side, nonce: Uint8Array, mac: Uint8Array, peer: string) =>
  Effect.tryPromise({
    try: () => crypto.subtle.verify("HMAC", key, new Uint8Array(mac), signedData(side, nonce)),
    catch: cryptoError(peer),
  });

const authFailed = (peer: string, message: string) =>
  new WireError({ peer, reason: "AuthFailed", message });

const newNonce = () => crypto.getRandomValues(new Uint8Array(NONCE_BYTES));

/** Applies the deadline, and closes the connection if the handshake fails or is interrupted. */
const guarded = (conn: HandshakeConn, peer: string, options: HandshakeOptions) =>
<A>(
  handshake: Effect.Effect<A, WireError>,
): Effect.Effect<A, WireError> => {
  const deadlineMs = options.deadlineMs ?? DEFAULT_HANDSHAKE_DEADLINE_MS;
  return handshake.pipe(
    Effect.timeoutFail({
      duration: Duration.millis(deadlineMs),
      onTimeout: () =>
        new WireError({
          peer,
          reason: "Timeout",
          message: `handshake with ${peer} did not finish within ${deadlineMs} ms`,
        }),
    }),
    Effect.onError(() =>
      Effect.sync(() => {
        try {
          conn.close();
        } catch { /* already closed */ }
      })
    ),
  );
};

/** The listening side (a rank): challenge, check the proof, welcome. */
export const serverHandshake = (
  conn: HandshakeConn,
  key: CryptoKey,
  peer: string,
  options: HandshakeOptions = {},
): Effect.Effect<FrameReader, WireError> =>
  Effect.gen(function* () {
    const reader = new FrameReader(conn, peer, options.maxFrameBytes);
    const small = { maxFrameBytes: HANDSHAKE_MAX_FRAME_BYTES };
    const nonce = newNonce();
    const challenge = { _tag: "Challenge", version: PROTOCOL_VERSION, nonce } as const;
    yield* writeFrame(conn, encodeFrame(Challenge, challenge), peer);

    const proof = yield* reader.next(Proof, small);
    if (!(yield* verify(key, "client", nonce, proof.mac, peer))) {
      return yield* authFailed(peer, `${peer} failed to prove it holds the shared secret`);
    }
    const mac = yield* sign(key, "server", proof.nonce, peer);
    yield* writeFrame(conn, encodeFrame(Welcome, { _tag: "Welcome", mac }), peer);
    return reader;
  }).pipe(guarded(conn, peer, options));

/** The dialing side (the supervisor): answer the challenge, check the welcome. */
export const clientHandshake = (
  conn: HandshakeConn,
  key: CryptoKey,
  peer: string,
  options: HandshakeOptions = {},
): Effect.Effect<FrameReader, WireError> =>
  Effect.gen(function* () {
    const reader = new FrameReader(conn, peer, options.maxFrameBytes);
    const small = { maxFrameBytes: HANDSHAKE_MAX_FRAME_BYTES };
    const challenge = yield* reader.next(Challenge, small);

    const nonce = newNonce();
    const mac = yield* sign(key, "client", challenge.nonce, peer);
    yield* writeFrame(conn, encodeFrame(Proof, { _tag: "Proof", mac, nonce }), peer);

    // A server that rejects our proof just hangs up: that is how a wrong secret looks from here.
    const welcome = yield* reader.next(Welcome, small).pipe(
      Effect.mapError((error) =>
        error.reason === "Closed"
          ? authFailed(peer, `${peer} closed the connection after our proof: do secrets differ?`)
          : error
      ),
    );
    if (!(yield* verify(key, "server", nonce, welcome.mac, peer))) {
      return yield* authFailed(peer, `${peer} failed to prove it holds the shared secret`);
    }
    return reader;
  }).pipe(guarded(conn, peer, options));

/** Imports secret bytes as an HMAC-SHA256 key, if long enough; `what` names them in errors. */
const importHmacKey = (bytes: Uint8Array, source: string, what: string) =>
  bytes.length < MIN_SECRET_BYTES
    ? Effect.fail(
      new SecretError({
        source,
        message: `${what} is ${bytes.length} bytes; it needs at least ${MIN_SECRET_BYTES} ` +
          "(generate one with `openssl rand -hex 32`)",
      }),
    )
    : Effect.tryPromise({
      try: () =>
        crypto.subtle.importKey(
          "raw",
          new Uint8Array(bytes),
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["sign", "verify"],
        ),
      catch: (cause) => new SecretError({ source, message: `${what}: ${cause}` }),
    });

/** Raw secret bytes (at least 16) as an HMAC-SHA256 key. */
export const importSecret = (bytes: Uint8Array): Effect.Effect<CryptoKey, SecretError> =>
  importHmacKey(bytes, "bytes", "the shared secret");

const isTrailingSpace = (byte: number) =>
  byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;

/** Reads a secret file (trailing whitespace and newline trimmed) as an HMAC-SHA256 key. */
export const loadSecret = (path: string): Effect.Effect<CryptoKey, SecretError> =>
  Effect.tryPromise({
    try: () => Deno.readFile(path),
    catch: (cause) =>
      new SecretError({
        source: path,
        message: cause instanceof Deno.errors.NotFound
          ? `secret file ${path} does not exist`
          : `cannot read secret file ${path}: ${cause instanceof Error ? cause.message : cause}`,
      }),
  }).pipe(Effect.flatMap((bytes) => {
    let end = bytes.length;
    while (end > 0 && isTrailingSpace(bytes[end - 1])) end--;
    return importHmacKey(bytes.subarray(0, end), path, `secret file ${path}`);
  }));
