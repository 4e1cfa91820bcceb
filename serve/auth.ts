/**
 * The optional API key: `Authorization: Bearer <key>` as OpenAI clients send it. Keys are
 * compared as SHA-256 digests with a loop that always looks at every byte, so neither the
 * comparison's time nor an early exit tells an attacker how much of a guess was right (hashing
 * first also hides the key's length).
 */
import { Effect } from "effect";
import { ApiError } from "./api_error.ts";

const sha256 = (text: string) =>
  Effect.promise(() => crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)))
    .pipe(Effect.map((digest) => new Uint8Array(digest)));

/** Equal-length byte arrays compared in time independent of where they differ. */
export const constantTimeEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
};

const missingKey = new ApiError({
  status: 401,
  message: "You didn't provide an API key. You need to provide your API key in an " +
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
  type: "invalid_request_error",
  param: null,
  code: null,
  headers: { "www-authenticate": "Bearer" },
});

const wrongKey = new ApiError({
  status: 401,
  message: "Incorrect API key provided.",
  type: "invalid_request_error",
  param: null,
  code: "invalid_api_key",
  headers: { "www-authenticate": "Bearer" },
});

/** Checks an `Authorization` header value against the key; fails with OpenAI's 401. */
export type ApiKeyCheck = (authorization: string | undefined) => Effect.Effect<void, ApiError>;

export const makeApiKeyCheck = (apiKey: string): Effect.Effect<ApiKeyCheck> =>
  Effect.map(sha256(apiKey), (expected) => (authorization) =>
    Effect.gen(function* () {
      const match = authorization === undefined ? null : /^Bearer\s+(.+)$/i.exec(authorization);
      if (match === null) return yield* missingKey;
      const given = yield* sha256(match[1].trim());
      if (!constantTimeEqual(given, expected)) return yield* wrongKey;
    }));
