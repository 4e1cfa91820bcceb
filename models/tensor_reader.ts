/**
 * Ranged reads of row-major f32 tensors from a file: a rank opens the file, seeks and reads only
 * the bytes of its own slice, so loading costs about model size / N per rank instead of the whole
 * model N times. Every read opens and closes its own handle inside a scope, also on failure.
 */
import { Effect } from "effect";
import { fileURLToPath } from "node:url";
import { type LoadError, loadError } from "./errors.ts";

/** A file path as a string or a `file:` URL (tests resolve files next to themselves). */
export type FilePath = string | URL;

/** Where one tensor lives in a file. */
export interface TensorEntry {
  readonly name: string;
  /** Byte offset of element 0 from the start of the file. */
  readonly offset: number;
  /** `[rows, cols]` for a row-major `[out, in]` matrix, or `[n]` for a vector (one row of n). */
  readonly shape: readonly number[];
  readonly byteLength: number;
}

/** The path as the string used in error messages and passed to `Deno.open`. */
export const filePathString = (path: FilePath): string =>
  typeof path === "string" ? path : fileURLToPath(path);

/** Rows and columns of the entry, a vector being a single row. */
export const matrixShape = (entry: TensorEntry): { rows: number; cols: number } =>
  entry.shape.length === 1
    ? { rows: 1, cols: entry.shape[0] }
    : { rows: entry.shape[0], cols: entry.shape[1] };

class NotRegularFile {}

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * An open read-only handle, closed when the enclosing scope ends (success, failure or
 * interrupt). Only a regular file is opened: opening a named pipe would wait for a writer.
 */
export const openForRead = (file: string) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        if (!(await Deno.stat(file)).isFile) throw new NotRegularFile();
        return await Deno.open(file, { read: true });
      },
      catch: (e) =>
        loadError(
          file,
          e instanceof NotRegularFile
            ? "not a regular file (a named pipe or a device?)"
            : `cannot open the file (${describe(e)})`,
        ),
    }),
    (handle) =>
      Effect.sync(() => {
        try {
          handle.close();
        } catch {
          // already closed: nothing left to release
        }
      }),
  );

/** Size in bytes of an open file. */
export const fileSize = (handle: Deno.FsFile, file: string): Effect.Effect<number, LoadError> =>
  Effect.tryPromise({
    try: async () => (await handle.stat()).size,
    catch: (e) => loadError(file, `cannot stat the file (${describe(e)})`),
  });

/** Thrown inside a read loop when the file ends early; turned into a `LoadError` by the caller. */
class ShortRead {
  constructor(readonly position: number, readonly wanted: number, readonly got: number) {}
}

/** Fills `dest` from `position`; resolves, or rejects with `ShortRead` at end of file. */
const readFully = async (handle: Deno.FsFile, position: number, dest: Uint8Array) => {
  await handle.seek(position, Deno.SeekMode.Start);
  let done = 0;
  while (done < dest.length) {
    const n = await handle.read(dest.subarray(done));
    if (n === null) throw new ShortRead(position, dest.length, done);
    done += n;
  }
};

/** Runs a batch of `readFully` calls as one effect with a precise `LoadError`. */
export const readSpans = (
  handle: Deno.FsFile,
  file: string,
  tensor: string | undefined,
  spans: (read: (position: number, dest: Uint8Array) => Promise<void>) => Promise<void>,
): Effect.Effect<void, LoadError> =>
  Effect.tryPromise({
    try: () => spans((position, dest) => readFully(handle, position, dest)),
    catch: (e) =>
      e instanceof ShortRead
        ? loadError(
          file,
          `unexpected end of file: needed bytes ${e.position}..${e.position + e.wanted} ` +
            `but only ${e.got} were there`,
          tensor,
        )
        : loadError(file, `read failed (${describe(e)})`, tensor),
  });

/** Reads `dest.length` bytes at `position` from an open file. */
export const readBytesAt = (
  handle: Deno.FsFile,
  file: string,
  position: number,
  dest: Uint8Array,
  tensor?: string,
): Effect.Effect<void, LoadError> =>
  readSpans(handle, file, tensor, (read) => read(position, dest));

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Files store little-endian f32; on a big-endian host swap each 4-byte word in place. */
const toF32 = (bytes: Uint8Array): Float32Array => {
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i < bytes.length; i += 4) {
      const [a, b] = [bytes[i], bytes[i + 1]];
      bytes[i] = bytes[i + 3];
      bytes[i + 1] = bytes[i + 2];
      bytes[i + 2] = b;
      bytes[i + 3] = a;
    }
  }
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
};

/** Fails unless [start, start + count) lies within `limit` rows or columns of `entry`. */
export const checkRange = (
  file: string,
  entry: { readonly name: string; readonly shape: readonly number[] },
  what: "rows" | "columns",
  start: number,
  count: number,
  limit: number,
): Effect.Effect<void, LoadError> =>
  Number.isSafeInteger(start) && Number.isSafeInteger(count) && start >= 0 && count >= 0 &&
    start + count <= limit
    ? Effect.void
    : Effect.fail(
      loadError(
        file,
        `${what} ${start}..${start + count} are out of range: the tensor has ${limit} ${what} ` +
          `(shape [${entry.shape.join(", ")}])`,
        entry.name,
      ),
    );

/** Rows `[rowStart, rowStart + rowCount)` of an open file's tensor, as one contiguous read. */
export const readRowsFrom = (
  handle: Deno.FsFile,
  file: string,
  entry: TensorEntry,
  rowStart: number,
  rowCount: number,
): Effect.Effect<Float32Array, LoadError> =>
  Effect.gen(function* () {
    const { rows, cols } = matrixShape(entry);
    yield* checkRange(file, entry, "rows", rowStart, rowCount, rows);
    const bytes = new Uint8Array(rowCount * cols * 4);
    yield* readBytesAt(handle, file, entry.offset + rowStart * cols * 4, bytes, entry.name);
    return toF32(bytes);
  });

/**
 * Columns `[colStart, colStart + colCount)` of every row of an open file's tensor (or of the
 * rows `rowSpan`), returned row-major as `[rows, colCount]`: one seek and one read of that span
 * per row.
 */
export const readColumnsFrom = (
  handle: Deno.FsFile,
  file: string,
  entry: TensorEntry,
  colStart: number,
  colCount: number,
  rowSpan?: { readonly start: number; readonly count: number },
): Effect.Effect<Float32Array, LoadError> =>
  Effect.gen(function* () {
    const { rows, cols } = matrixShape(entry);
    yield* checkRange(file, entry, "columns", colStart, colCount, cols);
    const { start: r0, count: rowCount } = rowSpan ?? { start: 0, count: rows };
    yield* checkRange(file, entry, "rows", r0, rowCount, rows);
    if (colCount === cols) return yield* readRowsFrom(handle, file, entry, r0, rowCount);
    const bytes = new Uint8Array(rowCount * colCount * 4);
    const span = colCount * 4;
    yield* readSpans(handle, file, entry.name, async (read) => {
      for (let r = 0; r < rowCount; r++) {
        const position = entry.offset + ((r0 + r) * cols + colStart) * 4;
        await read(position, bytes.subarray(r * span, (r + 1) * span));
      }
    });
    return toF32(bytes);
  });

/** Rows `[rowStart, rowStart + rowCount)` of a tensor (a row-parallel or vocab shard). */
export const readRows = (
  path: FilePath,
  entry: TensorEntry,
  rowStart: number,
  rowCount: number,
): Effect.Effect<Float32Array, LoadError> => {
  const file = filePathString(path);
  return Effect.scoped(
    Effect.flatMap(openForRead(file), (h) => readRowsFrom(h, file, entry, rowStart, rowCount)),
  );
};

/** Columns `[colStart, colStart + colCount)` of a tensor as `[rows, colCount]` (an input shard). */
export const readColumns = (
  path: FilePath,
  entry: TensorEntry,
  colStart: number,
  colCount: number,
): Effect.Effect<Float32Array, LoadError> => {
  const file = filePathString(path);
  return Effect.scoped(
    Effect.flatMap(openForRead(file), (h) => readColumnsFrom(h, file, entry, colStart, colCount)),
  );
};

/** Whole tensors, read through one handle (the CPU reference loads everything). */
export const readTensors = (
  path: FilePath,
  entries: readonly TensorEntry[],
): Effect.Effect<Float32Array[], LoadError> => {
  const file = filePathString(path);
  return Effect.scoped(
    Effect.flatMap(
      openForRead(file),
      (h) => Effect.forEach(entries, (e) => readRowsFrom(h, file, e, 0, matrixShape(e).rows)),
    ),
  );
};
