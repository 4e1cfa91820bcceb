/**
 * Which adapter each rank gets: the host's adapters as Dawn enumerates them, and a placement of
 * rank r on adapter `devices[r]` (one adapter per rank unless sharing is asked for).
 *
 * Dawn's node binding enumerates every adapter but hands JavaScript only the first one whose
 * name contains its `adapter=` flag. So an adapter with a name of its own is reached by that
 * flag in any isolate, while the second of two identical GPUs cannot be reached from a process
 * that sees both: such a rank needs a process whose environment shows the Vulkan loader only
 * its adapter. Here that is `VK_DRIVER_FILES` / `VK_ICD_FILENAMES` with one driver file per
 * adapter (lavapipe listed twice gives two identical adapters this way); on a host with one
 * driver for several identical GPUs, Mesa's device-select layer does it per rank process
 * (`DRI_PRIME=pci-…` with `MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1`, README "GPUs").
 */
import { Effect, Either } from "effect";
import type { BackendChoice } from "./device.ts";
import { AdapterSelectionError } from "./errors.ts";

/** One adapter in the order Dawn enumerates them (its `index` is what `--devices` names). */
export interface AdapterListing {
  /** Its place in Dawn's order, 0 first. */
  readonly index: number;
  /** Dawn's backend name (`vulkan`, `metal`, `d3d12`…), or `deno` for the built-in WebGPU. */
  readonly backend: string;
  /** The adapter's device name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  readonly name: string;
}

/** Where ranks go: an adapter index per rank, and whether ranks may share one. */
export interface DeviceRequest {
  /** Adapter index of each rank (`--devices 0,1,2,3`); default: rank r on adapter r. */
  readonly devices?: readonly number[];
  /** Several ranks may share an adapter (`--share-adapter`); default: one adapter per rank. */
  readonly shareAdapter?: boolean;
}

/** The driver files the Vulkan loader was told to use, if the environment lists them. */
export interface DriverFiles {
  /** `VK_DRIVER_FILES` or (older loaders) `VK_ICD_FILENAMES`. */
  readonly variable: string;
  /** The driver (ICD) files it lists, in order. */
  readonly files: readonly string[];
}

/** One rank's adapter and what reaches it. */
export interface RankPlacement {
  /** The rank placed. */
  readonly rank: number;
  /** The adapter it goes on. */
  readonly adapter: AdapterListing;
  /** Dawn's adapter-name filter that picks it (its `adapter=` flag). */
  readonly dawnName: string;
  /**
   * Environment of a rank process that shows the loader only this adapter; empty when the name
   * filter reaches it from any isolate. Non-empty means the rank needs a process of its own.
   */
  readonly processEnv: Readonly<Record<string, string>>;
  /** For logs and /status: `adapter 1 of 2 (VK_ICD_FILENAMES=/etc/lvp2.json)`. */
  readonly description: string;
}

/** The list Dawn writes when no adapter has the asked name: ` * backend: 'vulkan', name: '…'`. */
export const parseDawnAdapterList = (message: string): AdapterListing[] =>
  [...message.matchAll(/^ \* backend: '([^']*)', name: '(.*)'$/gm)].map((match, index) => ({
    index,
    backend: match[1],
    name: match[2],
  }));

/** Reads the loader's driver-file list from the environment (`VK_DRIVER_FILES` wins). */
export const driverFilesFromEnv = (
  get: (name: string) => string | undefined = (name) => globalThis.Deno?.env.get(name),
): DriverFiles | undefined => {
  for (const variable of ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"]) {
    const files = get(variable)?.split(":").filter((file) => file !== "");
    if (files && files.length > 0) return { variable, files };
  }
  return undefined;
};

/** Parses `--devices` / `TESSERA_DEVICES`: comma-separated adapter indices. */
export const parseDevices = (text: string): Either.Either<number[], AdapterSelectionError> => {
  const parts = text.split(",").map((part) => part.trim());
  if (parts.some((part) => !/^\d+$/.test(part))) {
    return Either.left(
      new AdapterSelectionError({
        message: `devices must be adapter indices separated by commas (0,1,2,3), got ${
          JSON.stringify(text)
        }`,
      }),
    );
  }
  return Either.right(parts.map(Number));
};

const listing = (adapters: readonly AdapterListing[]) =>
  adapters.length === 0
    ? "none"
    : adapters.map((a) => `${a.index}: ${a.name} (${a.backend})`).join("; ");

/**
 * Places `tp` ranks on `adapters`. Fails, saying what was found, when there are fewer adapters
 * than ranks and sharing was not asked for, when an index is out of range or repeated without
 * sharing, or when an adapter identical to an earlier one cannot be reached.
 */
export const placeRanks = (
  tp: number,
  adapters: readonly AdapterListing[],
  request: DeviceRequest,
  driverFiles?: DriverFiles,
): Either.Either<RankPlacement[], AdapterSelectionError> => {
  const fail = (message: string) => Either.left(new AdapterSelectionError({ message }));
  const found = `found ${adapters.length} adapter${adapters.length === 1 ? "" : "s"} (${
    listing(adapters)
  })`;
  const devices = request.devices ??
    Array.from({ length: tp }, (_, rank) => request.shareAdapter ? 0 : rank);
  if (devices.length !== tp) {
    return fail(`--tp is ${tp} but devices lists ${devices.length} adapters`);
  }
  if (request.devices === undefined && !request.shareAdapter && adapters.length < tp) {
    return fail(
      `tp ${tp} needs an adapter per rank but this host ${found}; pass --share-adapter to put ` +
        "several ranks on one adapter (a CPU renderer such as lavapipe), or lower --tp",
    );
  }
  const outOfRange = devices.find((index) => index >= adapters.length);
  if (outOfRange !== undefined) return fail(`no adapter ${outOfRange}: this host ${found}`);
  const repeated = devices.find((index, rank) => devices.indexOf(index) !== rank);
  if (repeated !== undefined && !request.shareAdapter) {
    return fail(
      `adapter ${repeated} is named for two ranks; pass --share-adapter to let ranks share it`,
    );
  }
  const placements: RankPlacement[] = [];
  for (const [rank, index] of devices.entries()) {
    const adapter = adapters[index];
    // Dawn takes the first adapter whose name contains the filter.
    const firstMatch = adapters.findIndex((a) => a.name.includes(adapter.name));
    let processEnv: Record<string, string> = {};
    let how = "";
    if (firstMatch !== index) {
      // One driver file per adapter: the rank's process gets only this adapter's file. The
      // loader lists drivers in the order given, and Dawn keeps that order among equals.
      if (driverFiles === undefined || driverFiles.files.length !== adapters.length) {
        return fail(
          `adapter ${index} (${adapter.name}) is identical to adapter ${firstMatch}, and Dawn ` +
            `reaches only the first of identical adapters from a process that sees both. Start ` +
            "each rank with `deno task rank` under its own selector (README, GPUs), or list one " +
            "driver file per adapter in VK_DRIVER_FILES so that local rank processes can do it",
        );
      }
      const file = driverFiles.files[index];
      processEnv = { [driverFiles.variable]: file };
      how = ` (${driverFiles.variable}=${file})`;
    }
    placements.push({
      rank,
      adapter,
      dawnName: adapter.name,
      processEnv,
      description: `adapter ${index} of ${adapters.length}${how}`,
    });
  }
  return Either.right(placements);
};

/** Fails when a placement needs a process of its own and the ranks share this one. */
export const requireOneProcess = (
  placements: readonly RankPlacement[],
  transport: string,
): Either.Either<readonly RankPlacement[], AdapterSelectionError> => {
  const apart = placements.find((p) => Object.keys(p.processEnv).length > 0);
  return apart === undefined ? Either.right(placements) : Either.left(
    new AdapterSelectionError({
      message: `rank ${apart.rank}'s ${apart.description} needs a process of its own with ` +
        `that environment, which the ${transport} transport cannot start: use --transport tcp ` +
        "without --ranks (local rank processes)",
    }),
  );
};

/** A name no adapter has: Dawn then refuses, listing every adapter it enumerated. */
const PROBE_NAME = "tessera: list the adapters";
/** Kept for the process's life: dawn.node must not free an instance that enumerated adapters. */
let probe: GPU | undefined;
const listed = new Map<BackendChoice, Promise<AdapterListing[]>>();

const listDawn = async (): Promise<AdapterListing[] | undefined> => {
  try {
    const { create } = await import("webgpu");
    probe ??= create([`adapter=${PROBE_NAME}`]);
    await probe.requestAdapter({ powerPreference: "high-performance" });
    return undefined; // an adapter has the probe's name: no listing to read
  } catch (refusal) {
    const adapters = parseDawnAdapterList(String(refusal));
    return adapters.length > 0 ? adapters : undefined;
  }
};

const listBuiltin = async (): Promise<AdapterListing[]> => {
  const adapter = await globalThis.navigator?.gpu?.requestAdapter().catch(() => null);
  return adapter
    ? [{ index: 0, backend: "deno", name: adapter.info?.description || "webgpu" }]
    : [];
};

/**
 * The host's adapters, once per process: Dawn's enumeration (unless the built-in WebGPU was
 * chosen), else the built-in's one adapter; empty when there is none.
 */
export const listAdapters = (backend: BackendChoice = "auto"): Effect.Effect<AdapterListing[]> =>
  Effect.promise(() => {
    let adapters = listed.get(backend);
    if (adapters === undefined) {
      adapters = (async () =>
        (backend !== "deno" ? await listDawn() : undefined) ?? listBuiltin())();
      listed.set(backend, adapters);
    }
    return adapters;
  });
