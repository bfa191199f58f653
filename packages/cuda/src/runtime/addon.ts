import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CudaUnavailableError } from '../errors.js';

type Handle = bigint;
type HostView = ArrayBufferView | ArrayBuffer;

/** The native addon's functions (native/addon.cc); handles are BigInt. */
export interface CudaAddon {
  readonly abi: number;
  loadDriver(paths: readonly string[]): unknown;
  init(): { deviceCount: number; driverVersion: number };
  deviceInfo(ordinal: number): DeviceInfo;
  useDevice(ordinal: number): void;
  releaseDevice(): void;
  memGetInfo(): { free: number; total: number };
  memAlloc(bytes: number): Handle;
  memFree(ptr: Handle): void;
  memsetD8(ptr: Handle, value: number, bytes: number): void;
  memcpyDtoD(dst: Handle, src: Handle, bytes: number): void;
  memcpyHtoD(dst: Handle, src: HostView): Promise<void>;
  memcpyDtoH(src: Handle, dst: HostView): Promise<void>;
  moduleLoadData(image: HostView): Handle;
  moduleUnload(mod: Handle): void;
  moduleGetFunction(mod: Handle, name: string): Handle;
  funcSetAttribute(fn: Handle, attribute: number, value: number): void;
  funcGetAttributes(fn: Handle): {
    numRegs: number;
    localBytes: number;
    staticSharedBytes: number;
    maxThreadsPerBlock: number;
  };
  launch(
    fn: Handle,
    grid: readonly [number, number, number],
    block: readonly [number, number, number],
    sharedBytes: number,
    stream: Handle,
    params: Uint8Array,
  ): void;
  streamCreate(): Handle;
  streamDestroy(stream: Handle): void;
  streamSynchronize(stream: Handle): Promise<void>;
  ctxSynchronize(): Promise<void>;
  eventCreate(): Handle;
  eventDestroy(event: Handle): void;
  eventRecord(event: Handle, stream: Handle): void;
  eventSynchronize(event: Handle): Promise<void>;
  eventElapsedTime(start: Handle, end: Handle): number;
  loadNvrtc(paths: readonly string[]): { path: string; version: string } | true | null;
  nvrtcCompile(
    source: string,
    name: string,
    options: readonly string[],
  ): Promise<{
    ok: boolean;
    log: string;
    status: number;
    image?: Uint8Array;
    format?: 'cubin' | 'ptx';
  }>;
}

export interface DeviceInfo {
  readonly name: string;
  readonly major: number;
  readonly minor: number;
  readonly multiprocessors: number;
  readonly l2CacheBytes: number;
  readonly maxSharedPerBlockOptin: number;
  readonly maxThreadsPerBlock: number;
  readonly totalMemory: number;
}

let cached: CudaAddon | undefined;

/** The @tessera/cuda package folder: the nearest parent of this module with its package.json. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).name === '@tessera/cuda')
      return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the @tessera/cuda package folder');
    dir = up;
  }
}

/**
 * Loads the addon: $TESSERA_CUDA_ADDON (a .node file, used by bundles), else node-gyp-build from
 * the package (prebuilds/ or build/Release). Throws CudaUnavailableError when there is none.
 */
export function loadAddon(): CudaAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const explicit = process.env.TESSERA_CUDA_ADDON;
  try {
    if (explicit) {
      if (!existsSync(explicit)) throw new Error(`TESSERA_CUDA_ADDON=${explicit} does not exist`);
      cached = require(explicit) as CudaAddon;
    } else {
      const build = require('node-gyp-build') as (dir: string) => unknown;
      cached = build(packageRoot()) as CudaAddon;
    }
  } catch (e) {
    throw new CudaUnavailableError(
      `no CUDA driver/GPU found: the @tessera/cuda native addon could not be loaded (${(e as Error).message}); build it with \`npm run build:addon -w @tessera/cuda\``,
      { call: 'loadAddon', cause: e },
    );
  }
  return cached;
}
