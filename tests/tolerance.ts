/** Float comparison helpers for tests: every kernel is checked against a CPU reference. */
import assert from "node:assert/strict";

/** Largest |a[i] - b[i]|; throws if lengths differ. */
export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length, `length ${a.length} != ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
  }
  return max;
};

/** Asserts every element is within `atol + rtol·|expected|`, naming the first offender. */
export const assertClose = (
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-5, rtol = 1e-5, what = "values" }: { atol?: number; rtol?: number; what?: string } =
    {},
): void => {
  assert.equal(
    actual.length,
    expected.length,
    `${what}: length ${actual.length} != ${expected.length}`,
  );
  for (let i = 0; i < actual.length; i++) {
    const limit = atol + rtol * Math.abs(expected[i]);
    const diff = Math.abs(actual[i] - expected[i]);
    if (!(diff <= limit)) {
      assert.fail(
        `${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (|diff| ${diff} > ${limit}); ` +
          `max |diff| ${maxAbsDiff(actual, expected)}`,
      );
    }
  }
};

/** Deterministic pseudo-random floats in [-scale, scale) (mulberry32), so failures reproduce. */
export const randomFloats = (length: number, seed: number, scale = 1): Float32Array => {
  let s = seed >>> 0;
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
};
