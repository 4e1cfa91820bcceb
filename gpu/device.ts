/**
 * WebGPU device acquisition as a scoped Effect resource.
 *
 * Dawn (the `webgpu` npm package) comes first: its submit-and-wait is ~70x faster than Deno's
 * built-in `navigator.gpu` on lavapipe, and collectives wait on readbacks. Deno's built-in is the
 * automatic fallback when Dawn cannot load or finds no adapter.
 */
import { Duration, Effect, type Scope } from "effect";
import {
  exposedGc,
  NO_COLLECTOR_WARNING,
  shouldWarnNoCollector,
  trackDawnEncoders,
} from "./collector.ts";
import { instrumentDevice } from "./counters.ts";
import { withoutDawnLimitNotices } from "./dawn_limit_notices.ts";
import { installGentleDawnPolling } from "./dawn_polling.ts";
import { DeviceLostError, GpuOperationError, NoAdapterError } from "./errors.ts";

/** A WebGPU implementation: Dawn (the `webgpu` npm package) or Deno's built-in `navigator.gpu`. */
export type Backend = "dawn" | "deno";
/** A backend to use, or `auto`: Dawn first, Deno's built-in when Dawn is unavailable. */
export type BackendChoice = Backend | "auto";

/** One rank's device plus what the kernels need to know about it. */
export interface Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** Which backend provided it. */
  readonly backend: Backend;
  /** The adapter's description, e.g. `llvmpipe`. */
  readonly adapterName: string;
  /**
   * A CPU renderer (lavapipe, SwiftShader: WebGPU's fallback adapter): its memory is the host's,
   * shared by every rank on the host (the memory plan's budget).
   */
  readonly cpuRenderer: boolean;
  /** The optional features the device was created with (what the kernels may use). */
  readonly features: GpuFeatures;
  /** The device limits the kernels size their buffers and dispatches by. */
  readonly limits: {
    readonly maxStorageBufferBindingSize: number;
    readonly maxBufferSize: number;
    readonly maxComputeWorkgroupsPerDimension: number;
  };
  /** Resolves if the device is lost. */
  readonly whenLost: Promise<DeviceLostError>;
  /**
   * `wait`, rejected with the `DeviceLostError` instead if the device is lost first, so no wait
   * hangs on a lost device. Unlike a `Promise.race` against `whenLost`, a settled wait leaves
   * nothing behind: a race adds a reaction to `whenLost` that is never released, which kept
   * every readback's closures (and the Dawn objects they hold) alive for the device's life.
   */
  readonly unlessLost: <A>(wait: Promise<A>) => Promise<A>;
  /** Waits now registered with `unlessLost` (zero between steps; tests watch it for leaks). */
  readonly pendingWaits: () => number;
  /**
   * The first error the device raised outside an error scope (a shader that does not compile,
   * a binding over a limit, out of memory), if any. Work encoded after it may have been
   * dropped, so every wait fails with it rather than return numbers that were never computed.
   */
  readonly uncapturedError: () => string | undefined;
}

/**
 * Optional adapter features, probed when a device is created and enabled on it when present.
 * `packedIntegerDot` is WGSL's `packed_4x8_integer_dot_product` language feature (dot4I8Packed,
 * unpack4xI8), which needs no device feature.
 */
export interface GpuFeatures {
  /** `shader-f16`: f16 arithmetic and storage in WGSL. */
  readonly shaderF16: boolean;
  /** `subgroups`: subgroup operations in WGSL, with WGSL's subgroup_id builtin. */
  readonly subgroups: boolean;
  /** WGSL's packed_4x8_integer_dot_product. */
  readonly packedIntegerDot: boolean;
  /** `timestamp-query`: GPU timestamps at pass boundaries (gpu/kernel_profile.ts). */
  readonly timestampQuery: boolean;
}

/** The features as one log line: each name with + (present) or − (absent). */
export const describeFeatures = (features: GpuFeatures): string =>
  ([
    ["shader-f16", features.shaderF16],
    ["subgroups", features.subgroups],
    ["packed_4x8_integer_dot_product", features.packedIntegerDot],
    ["timestamp-query", features.timestampQuery],
  ] as const).map(([name, has]) => `${has ? "+" : "-"}${name}`).join(" ");

export interface AcquireOptions {
  readonly backend?: BackendChoice;
  readonly label?: string;
  /**
   * Dawn's adapter-name filter (a rank's placement, gpu/adapters.ts); default: the first
   * adapter, high-performance first. A named adapter that is not there fails, never falls back.
   */
  readonly adapterName?: string;
  /** Appended to the adapter's name in logs and /status: how the placement reached it. */
  readonly placementNote?: string;
}

const INSTALL_HINT =
  "No WebGPU adapter found. On CPU-only Linux install Mesa 25's lavapipe: add Debian's " +
  "bookworm-backports suite and `apt-get install -t bookworm-backports mesa-vulkan-drivers` " +
  "(bookworm's Mesa 22 is rejected by Dawn). On a GPU machine install its Vulkan driver.";

/**
 * Dawn's `GPU`, loaded once per isolate and referenced until `releaseDawnInstance`: dawn.node's
 * adapters and devices keep only a raw pointer to their `GPU`'s native instance, which is freed
 * when the `GPU` is collected, after which their next poll crashes (or deadlocks) in
 * `InstanceBase::ProcessEvents` (bench/dawn_soak.ts --drop-gpu). The promise is what is cached,
 * not its value, so ranks acquiring devices concurrently (the in-process transport) share one
 * `create()`; caching the value let each pass the check before the first import resolved, and
 * the `GPU` whose value was overwritten was collected mid-generation.
 */
const dawnGpus = new Map<string, Promise<GPU | null>>();

/** Dawn objects made in this isolate that V8 has not finalized yet, by kind. */
const unfinalized = { instances: 0, adaptersAndDevices: 0 };
const dawnObjectFinalized = new FinalizationRegistry<keyof typeof unfinalized>((kind) => {
  unfinalized[kind]--;
});
const trackUntilFinalized = (object: object, kind: keyof typeof unfinalized) => {
  unfinalized[kind]++;
  dawnObjectFinalized.register(object, kind);
};

/**
 * Loads Dawn once per isolate and adapter-name filter (`""`: any adapter; the filter is Dawn's
 * `adapter=` flag, see gpu/adapters.ts); `null` when the native module cannot load here.
 */
const loadDawn = (adapterName: string) =>
  Effect.promise(() => {
    let loading = dawnGpus.get(adapterName);
    if (loading === undefined) {
      loading = (async (): Promise<GPU | null> => {
        try {
          const { create } = await import("webgpu");
          const gpu = create(adapterName === "" ? [] : [`adapter=${adapterName}`]);
          trackUntilFinalized(gpu, "instances");
          installGentleDawnPolling();
          return gpu;
        } catch {
          return null;
        }
      })();
      dawnGpus.set(adapterName, loading);
    }
    return loading;
  });

/**
 * Frees this isolate's Dawn instance, and with it lavapipe's threads, its memfds and Mesa's
 * disk-cache thread. Deno does not finalize a Worker's native objects when the Worker ends, so
 * a Worker that acquired a Dawn device must call this before it closes, or all of that stays in
 * the process for good (two Dawn, two lavapipe and one cache thread per rank Worker). Only
 * once every adapter and device made here has been finalized is the instance let go (freeing
 * it under a live device crashes, see above), so destroy the devices and drop every reference
 * to them first. Succeeds with whether the instance is gone: false when it did not go within
 * `deadline` (a device still referenced) or V8's `gc` is not exposed.
 */
export const releaseDawnInstance = (
  deadline: Duration.DurationInput = "3 seconds",
): Effect.Effect<boolean> =>
  Effect.gen(function* () {
    const gc = exposedGc();
    if (dawnGpus.size === 0) return true;
    if (gc === undefined) return false;
    const giveUpAt = performance.now() + Duration.toMillis(deadline);
    // Finalization callbacks run as tasks of their own, so collect, then let them run.
    const collectUntil = (done: () => boolean) =>
      Effect.gen(function* () {
        while (!done() && performance.now() < giveUpAt) {
          gc();
          yield* Effect.sleep("1 millis");
        }
        return done();
      });
    if (!(yield* collectUntil(() => unfinalized.adaptersAndDevices === 0))) return false;
    dawnGpus.clear();
    return yield* collectUntil(() => unfinalized.instances === 0);
  });

const requestAdapter = (gpu: GPU) =>
  Effect.tryPromise(() => gpu.requestAdapter({ powerPreference: "high-performance" })).pipe(
    Effect.orElseSucceed(() => null),
  );

/**
 * Dawn's adapter, its limit notices kept off the terminal (gpu/dawn_limit_notices.ts); Dawn's
 * refusal (it lists the adapters it has when none has the asked name) when it has none.
 */
const requestDawnAdapter = (gpu: GPU) =>
  Effect.tryPromise(() =>
    withoutDawnLimitNotices(() => gpu.requestAdapter({ powerPreference: "high-performance" }))
  ).pipe(Effect.either);

const findAdapter = (choice: BackendChoice, adapterName: string) =>
  Effect.gen(function* () {
    if (choice !== "deno") {
      const dawn = yield* loadDawn(adapterName);
      const request = dawn ? yield* requestDawnAdapter(dawn) : undefined;
      const adapter = request && request._tag === "Right" ? request.right : null;
      if (adapter) {
        trackUntilFinalized(adapter, "adaptersAndDevices");
        return { adapter, backend: "dawn" as const, instance: dawn! };
      }
      // A named adapter is a placement (gpu/adapters.ts): another adapter will not do.
      if (adapterName !== "") {
        const why = request && request._tag === "Left" ? String(request.left.error) : "";
        return yield* new NoAdapterError({
          message: `Dawn has no adapter named ${JSON.stringify(adapterName)}${
            why ? `: ${why}` : ""
          }`,
        });
      }
      if (choice === "dawn") {
        return yield* new NoAdapterError({ message: `Dawn (webgpu package): ${INSTALL_HINT}` });
      }
    }
    const builtin = typeof navigator !== "undefined" ? navigator.gpu : undefined;
    const adapter = builtin ? yield* requestAdapter(builtin) : null;
    if (adapter) return { adapter, backend: "deno" as const, instance: builtin! };
    return yield* new NoAdapterError({ message: INSTALL_HINT });
  });

/** Reads `TESSERA_GPU_BACKEND` (dawn | deno | auto) so a user can force a backend. */
export const backendFromEnv = (): BackendChoice => {
  const value = globalThis.Deno?.env.get("TESSERA_GPU_BACKEND");
  return value === "dawn" || value === "deno" ? value : "auto";
};

/**
 * Acquires a fresh device (one per rank, even on a shared physical adapter); the device is
 * destroyed when the scope closes.
 */
export const acquireGpu = (
  options: AcquireOptions = {},
): Effect.Effect<Gpu, NoAdapterError | GpuOperationError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const { adapter, backend, instance } = yield* findAdapter(
        options.backend ?? backendFromEnv(),
        options.adapterName ?? "",
      );
      // Deno's GPU type lacks the (standard) wgslLanguageFeatures; Dawn and Deno both have it.
      const wgsl: ReadonlySet<string> =
        (instance as { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures ??
          new Set();
      const features: GpuFeatures = {
        shaderF16: adapter.features.has("shader-f16"),
        subgroups: adapter.features.has("subgroups") && wgsl.has("subgroup_id"),
        packedIntegerDot: wgsl.has("packed_4x8_integer_dot_product"),
        timestampQuery: adapter.features.has("timestamp-query"),
      };
      const requiredFeatures = (["shader-f16", "subgroups", "timestamp-query"] as const).filter(
        (name) => adapter.features.has(name),
      );
      const device = yield* Effect.tryPromise({
        try: () =>
          adapter.requestDevice({
            label: options.label,
            requiredFeatures,
            requiredLimits: {
              maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
              maxBufferSize: adapter.limits.maxBufferSize,
              maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
              maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
              maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
            },
          }),
        catch: (cause) =>
          new GpuOperationError({ operation: "requestDevice", message: String(cause) }),
      });
      instrumentDevice(device); // work counters for the benchmark (gpu/counters.ts)
      if (backend === "dawn") {
        trackUntilFinalized(device, "adaptersAndDevices");
        trackDawnEncoders(device); // bounded collection of Dawn's objects (gpu/collector.ts)
        if (shouldWarnNoCollector()) yield* Effect.logWarning(NO_COLLECTOR_WARNING);
      }
      let uncapturedError: string | undefined;
      device.addEventListener("uncapturederror", (event) => {
        uncapturedError ??= (event as GPUUncapturedErrorEvent).error.message;
      });
      const pending = new Set<(lost: DeviceLostError) => void>();
      let lostError: DeviceLostError | undefined;
      const whenLost = device.lost.then((info) => {
        lostError = new DeviceLostError({
          message: `GPU device ${options.label ?? ""} lost: ${info.message || info.reason}`,
          reason: String(info.reason),
        });
        for (const reject of pending) reject(lostError);
        pending.clear();
        return lostError;
      });
      const unlessLost = <A>(wait: Promise<A>): Promise<A> => {
        if (lostError) {
          // The wait still settles (Dawn rejects it with an AbortError); nobody is left to hear it.
          wait.catch(() => {});
          return Promise.reject(lostError);
        }
        return new Promise<A>((resolve, reject) => {
          pending.add(reject);
          wait.then(
            (value) => {
              pending.delete(reject);
              resolve(value);
            },
            (cause) => {
              pending.delete(reject);
              reject(cause);
            },
          );
        });
      };
      const info = adapter.info;
      return {
        device,
        backend,
        cpuRenderer: info?.isFallbackAdapter === true || info?.architecture === "software" ||
          /llvmpipe|lavapipe|swiftshader/i.test(info?.description ?? ""),
        adapterName: (info?.description || info?.vendor || backend) +
          (options.placementNote ? ` [${options.placementNote}]` : ""),
        features,
        limits: {
          maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
          maxBufferSize: device.limits.maxBufferSize,
          maxComputeWorkgroupsPerDimension: device.limits.maxComputeWorkgroupsPerDimension,
        },
        whenLost,
        unlessLost,
        pendingWaits: () => pending.size,
        uncapturedError: () => uncapturedError,
      } satisfies Gpu;
    }),
    (gpu) => Effect.sync(() => gpu.device.destroy()),
  );

/**
 * On a CPU renderer (lavapipe) every device starts one thread per core, so tp devices would
 * oversubscribe the cores tp-fold. While the ranks create their devices, ask Mesa for
 * cores / tp threads each (unless the user chose LP_NUM_THREADS), then restore the variable.
 */
export const withCpuRendererThreads = (
  tp: number,
): <A, E, R>(spawn: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> =>
<A, E, R>(spawn: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const previous = Deno.env.get("LP_NUM_THREADS");
      if (previous === undefined && tp > 1) {
        const threads = Math.max(1, Math.floor(navigator.hardwareConcurrency / tp));
        Deno.env.set("LP_NUM_THREADS", String(threads));
      }
      return previous;
    }),
    () => spawn,
    (previous) =>
      Effect.sync(() =>
        previous === undefined
          ? Deno.env.delete("LP_NUM_THREADS")
          : Deno.env.set("LP_NUM_THREADS", previous)
      ),
  );
