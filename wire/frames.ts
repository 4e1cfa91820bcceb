/**
 * Length-prefixed binary frames, one Schema-typed message each.
 *
 *   u32 LE body length | u32 LE header length H | H bytes of UTF-8 JSON | zero pad to 8 | binary
 *
 * The header is the Schema-encoded message as JSON, with every Uint8Array replaced by
 * `{"$bytes":[offset,length]}` pointing into the binary area. Sections start on 8-byte boundaries
 * (relative to the body, which the reader allocates fresh) so decoded tensors can be viewed as
 * Float32Array without a copy. Tensor data is never a JSON array, and decoding never evaluates.
 */
import { Duration, Effect, Either, Schema } from "effect";
import { WireError } from "./errors.ts";

/** Anything we read bytes from: a Deno.Conn, or an in-memory fake in tests. */
export interface ByteSource {
  read(p: Uint8Array): Promise<number | null>;
}

/** Anything we write bytes to. */
export interface ByteSink {
  write(p: Uint8Array): Promise<number>;
}

/** Closes a connection that may already be closed (closing twice throws in Deno). */
export const closeQuietly = (conn: { close(): void }): void => {
  try {
    conn.close();
  } catch { /* already closed */ }
};

/** Generous default for tensor traffic; the handshake uses a far smaller limit. */
export const DEFAULT_MAX_FRAME_BYTES = 1 << 30;
const CHUNK_BYTES = 64 * 1024;
const MAX_BODY_BYTES = 0xffff_ffff;

const align8 = (n: number) => (n + 7) & ~7;
const readU32 = (bytes: Uint8Array, at: number) =>
  (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes `message` as one frame (length prefix included) in a single allocation. Throws if the
 * message does not encode with `schema`, or holds a `"$bytes"` key (reserved): both are bugs.
 */
export const encodeFrame = <A, I>(schema: Schema.Schema<A, I>, message: NoInfer<A>): Uint8Array => {
  const encoded = Schema.encodeSync(schema)(message);
  const sections: { bytes: Uint8Array; offset: number }[] = [];
  const refs = new WeakSet<object>();
  let binaryLength = 0;
  const header = JSON.stringify(encoded, function (this: unknown, key: string, value: unknown) {
    if (key === "$bytes" && !refs.has(this as object)) {
      throw new TypeError('encodeFrame: "$bytes" is a reserved key in wire messages');
    }
    // The holder's raw value, not `value`: a toJSON (e.g. Node's Buffer) has already run on it.
    const raw = (this as Record<string, unknown>)[key];
    if (!(raw instanceof Uint8Array)) return value;
    const offset = align8(binaryLength);
    sections.push({ bytes: raw, offset });
    binaryLength = offset + raw.length;
    const ref = { $bytes: [offset, raw.length] };
    refs.add(ref);
    return ref;
  });
  const headerBytes = utf8Encoder.encode(header);
  const binaryStart = align8(4 + headerBytes.length);
  const bodyLength = binaryStart + binaryLength;
  if (bodyLength > MAX_BODY_BYTES) throw new RangeError(`frame body of ${bodyLength} bytes`);

  const frame = new Uint8Array(4 + bodyLength); // zeroed, so the padding is already there
  const view = new DataView(frame.buffer);
  view.setUint32(0, bodyLength, true);
  view.setUint32(4, headerBytes.length, true);
  frame.set(headerBytes, 8);
  for (const { bytes, offset } of sections) frame.set(bytes, 4 + binaryStart + offset);
  return frame;
};

/** `{"$bytes":[offset,length]}` exactly: no other keys, two non-negative safe integers. */
const asBytesRef = (value: object): readonly [number, number] | undefined => {
  const ref = (value as { $bytes?: unknown }).$bytes;
  const isIndex = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  return Object.keys(value).length === 1 && Array.isArray(ref) && ref.length === 2 &&
      isIndex(ref[0]) && isIndex(ref[1])
    ? [ref[0], ref[1]]
    : undefined;
};

const preview = (value: unknown) => JSON.stringify(value).slice(0, 80);

/**
 * Decodes one frame body (without its length prefix). Uint8Array fields come back as views of
 * `body`, or of one aligned copy of it when `body` does not start on an 8-byte boundary.
 */
export const decodeFrameBody = <A, I>(
  schema: Schema.Schema<A, I>,
  body: Uint8Array,
  peer: string,
): Either.Either<A, WireError> => {
  const malformedError = (problem: string) =>
    new WireError({
      peer,
      reason: "Malformed",
      message: `malformed frame from ${peer}: ${problem}`,
    });
  const malformed = (problem: string) => Either.left(malformedError(problem));
  if (body.length < 4) return malformed(`body is ${body.length} bytes, too short for a header`);
  const headerLength = readU32(body, 0);
  const binaryStart = align8(4 + headerLength);
  if (binaryStart > body.length) {
    return malformed(`header length ${headerLength} overruns the ${body.length}-byte body`);
  }
  let text: string;
  try {
    text = utf8Decoder.decode(body.subarray(4, 4 + headerLength));
  } catch {
    return malformed("header is not valid UTF-8");
  }

  let binary: Uint8Array | undefined; // made on the first reference, at most one copy
  let badRef: string | undefined;
  const revive = (_key: string, value: unknown) => {
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, "$bytes")) {
      return value;
    }
    const ref = asBytesRef(value);
    if (ref === undefined) badRef = `bad $bytes reference ${preview(value)}`;
    else if (ref[0] % 8 !== 0) badRef = `$bytes offset ${ref[0]} is not 8-byte aligned`;
    else {
      binary ??= (body.byteOffset % 8 === 0 ? body : body.slice()).subarray(binaryStart);
      if (ref[0] + ref[1] <= binary.length) return binary.subarray(ref[0], ref[0] + ref[1]);
      badRef = `$bytes [${ref}] is out of bounds of the ${binary.length}-byte binary area`;
    }
    throw new SyntaxError(badRef); // stops JSON.parse; reported below
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text, revive);
  } catch (error) {
    return malformed(badRef ?? `header is not valid JSON (${(error as Error).message})`);
  }
  return Either.mapLeft(
    Schema.decodeUnknownEither(schema)(parsed),
    (error) => malformedError(`message does not match its schema: ${error.message}`),
  );
};

const CLOSED_ERRORS = [
  Deno.errors.BadResource,
  Deno.errors.BrokenPipe,
  Deno.errors.ConnectionAborted,
  Deno.errors.ConnectionReset,
  Deno.errors.Interrupted,
  Deno.errors.NotConnected,
];

/** A failed read or write: "Closed" when the connection is gone (either end), else "Io". */
const streamError = (peer: string, doing: "reading from" | "writing to", cause: unknown) => {
  if (cause instanceof WireError) return cause;
  const closed = CLOSED_ERRORS.some((kind) => cause instanceof kind);
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new WireError({
    peer,
    reason: closed ? "Closed" : "Io",
    message: `${doing} ${peer} failed: ${detail}`,
  });
};

export interface NextOptions {
  /** Fail with "Timeout" if the whole frame has not arrived in time. */
  readonly timeoutMs?: number;
  /** Overrides the reader's limit for this frame (the handshake keeps it small). */
  readonly maxFrameBytes?: number;
}

/**
 * Reads frames from one connection. Small frames come out of a reusable 64 KiB chunk; large
 * bodies are read straight into their own allocation. One consumer at a time. After a stream
 * failure (closed, too large, timed out mid-read) framing is lost, so every later `next` fails.
 */
export class FrameReader {
  readonly #chunk = new Uint8Array(CHUNK_BYTES);
  #start = 0; // buffered bytes are #chunk[#start, #end)
  #end = 0;
  #broken: WireError | undefined;

  constructor(
    readonly source: ByteSource,
    readonly peer: string,
    readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES,
  ) {}

  next<A, I>(schema: Schema.Schema<A, I>, options: NextOptions = {}): Effect.Effect<A, WireError> {
    const { timeoutMs, maxFrameBytes = this.maxFrameBytes } = options;
    const read = this.#readBody(maxFrameBytes);
    const body = timeoutMs === undefined ? read : read.pipe(Effect.timeoutFail({
      duration: Duration.millis(timeoutMs),
      onTimeout: () => this.#error("Timeout", `no frame from ${this.peer} within ${timeoutMs} ms`),
    }));
    return body.pipe(
      Effect.tapError((error) => Effect.sync(() => this.#broken ??= error)),
      Effect.flatMap((bytes) => decodeFrameBody(schema, bytes, this.peer)),
    );
  }

  #error(reason: WireError["reason"], message: string) {
    return new WireError({ peer: this.peer, reason, message });
  }

  #readBody(maxFrameBytes: number): Effect.Effect<Uint8Array, WireError> {
    return Effect.gen(this, function* () {
      if (this.#broken) return yield* Effect.fail(this.#broken);
      while (this.#end - this.#start < 4) {
        if ((yield* this.#fillChunk()) !== null) continue;
        return yield* this.#end === this.#start
          ? this.#error("Closed", `${this.peer} closed the connection`)
          : this.#error("Malformed", `${this.peer} closed the connection inside a length prefix`);
      }
      const length = readU32(this.#chunk, this.#start);
      if (length > maxFrameBytes) {
        return yield* this.#error(
          "TooLarge",
          `${this.peer} sent a ${length}-byte frame; the limit is ${maxFrameBytes}`,
        );
      }
      this.#start += 4;
      const body = new Uint8Array(length);
      let filled = this.#take(body);
      while (filled < length) {
        const direct = length - filled >= CHUNK_BYTES;
        const n = direct ? yield* this.#read(body.subarray(filled)) : yield* this.#fillChunk();
        if (n === null) {
          return yield* this.#error(
            "Malformed",
            `${this.peer} closed the connection mid-frame (${filled} of ${length} bytes)`,
          );
        }
        filled += direct ? n : this.#take(body.subarray(filled));
      }
      return body;
    });
  }

  /** Moves buffered bytes into `target`; returns how many. */
  #take(target: Uint8Array): number {
    const n = Math.min(target.length, this.#end - this.#start);
    target.set(this.#chunk.subarray(this.#start, this.#start + n));
    this.#start += n;
    return n;
  }

  /** One read into the chunk after moving the (few) leftover bytes to its front. */
  #fillChunk(): Effect.Effect<number | null, WireError> {
    this.#chunk.copyWithin(0, this.#start, this.#end);
    this.#end -= this.#start;
    this.#start = 0;
    return this.#read(this.#chunk.subarray(this.#end)).pipe(
      Effect.tap((n) => Effect.sync(() => this.#end += n ?? 0)),
    );
  }

  #read(target: Uint8Array): Effect.Effect<number | null, WireError> {
    return Effect.tryPromise({
      try: () => this.source.read(target),
      catch: (cause) => streamError(this.peer, "reading from", cause),
    });
  }
}

const writeAll = async (sink: ByteSink, frame: Uint8Array, peer: string): Promise<void> => {
  for (let written = 0; written < frame.length;) {
    const n = await sink.write(frame.subarray(written));
    if (n <= 0) {
      throw new WireError({ peer, reason: "Closed", message: `${peer} accepts no bytes` });
    }
    written += n;
  }
};

/**
 * Writes a whole frame, looping on partial writes. Unserialized: concurrent writers on one
 * connection must share a `makeFrameWriter`.
 */
export const writeFrame = (
  sink: ByteSink,
  frame: Uint8Array,
  peer: string,
): Effect.Effect<void, WireError> =>
  Effect.tryPromise({
    try: () => writeAll(sink, frame, peer),
    catch: (cause) => streamError(peer, "writing to", cause),
  });

export interface FrameWriter {
  write(frame: Uint8Array): Effect.Effect<void, WireError>;
}

/**
 * Serializes writers on one connection with a promise chain: each frame goes out whole, in call
 * order, even if the writing fiber is interrupted (the promise, not the fiber, holds the turn).
 * After a failed write the stream may hold half a frame, so later writes fail too.
 */
export const makeFrameWriter = (sink: ByteSink, peer: string): FrameWriter => {
  let turn: Promise<void> = Promise.resolve();
  let broken: WireError | undefined;
  return {
    write: (frame) =>
      Effect.tryPromise({
        try: () => {
          const mine = turn.then(() => {
            if (broken) throw broken;
            return writeAll(sink, frame, peer).catch((cause) => {
              throw broken ??= streamError(peer, "writing to", cause);
            });
          });
          turn = mine.catch(() => {});
          return mine;
        },
        catch: (cause) => streamError(peer, "writing to", cause),
      }),
  };
};
