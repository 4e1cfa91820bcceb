/**
 * The optional API key: `Authorization: Bearer <key>` as OpenAI clients send it. Keys are
 * compared as SHA-256 digests with a loop that always looks at every byte, so neither the
 * comparison's time nor an early exit tells an attacker how much of a guess was right (hashing
 * first also hides the key's length). The admin key (drill routes) is checked the same way.
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

const unauthorized = (message: string, code: string | null) =>
  new ApiError({
    status: 401,
    message,
    type: "invalid_request_error",
    param: null,
    code,
    headers: { "www-authenticate": "Bearer" },
  });

/** Checks an `Authorization` header value against the key; fails with OpenAI's 401. */
export type ApiKeyCheck = (authorization: string | undefined) => Effect.Effect<void, ApiError>;

const makeKeyCheck = (
  key: string,
  missing: ApiError,
  wrong: ApiError,
): Effect.Effect<ApiKeyCheck> =>
  Effect.map(sha256(key), (expected) => (authorization) =>
    Effect.gen(function* () {
      const match = authorization === undefined ? null : /^Bearer\s+(.+)$/i.exec(authorization);
      if (match === null) return yield* missing;
      const given = yield* sha256(match[1].trim());
      if (!constantTimeEqual(given, expected)) return yield* wrong;
    }));

export const makeApiKeyCheck = (apiKey: string): Effect.Effect<ApiKeyCheck> =>
  makeKeyCheck(
    apiKey,
    // OpenAI's own 401s, word for word.
    unauthorized(
      "You didn't provide an API key. You need to provide your API key in an " +
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      null,
    ),
    unauthorized("Incorrect API key provided.", "invalid_api_key"),
  );

/** The admin routes' key: the same check, with 401s that name the admin key. */
export const makeAdminKeyCheck = (adminKey: string): Effect.Effect<ApiKeyCheck> =>
  makeKeyCheck(
    adminKey,
    unauthorized(
      "You didn't provide the admin key. Send it in an Authorization header using Bearer " +
        "auth (i.e. Authorization: Bearer ADMIN_KEY).",
      null,
    ),
    unauthorized("Incorrect admin key provided.", "invalid_admin_key"),
  );
