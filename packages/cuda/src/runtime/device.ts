import { UnsupportedError } from '@tessera/core';
import { CudaUnavailableError, native, nativeAsync } from '../errors.js';
import { type CudaAddon, type DeviceInfo, loadAddon } from './addon.js';

/** Where libcuda.so.1 may be; $TESSERA_LIBCUDA first. */
export function driverPaths(): string[] {
  return [
    process.env.TESSERA_LIBCUDA,
    'libcuda.so.1',
    'libcuda.so',
    '/usr/lib/x86_64-linux-gnu/libcuda.so.1',
    '/usr/local/nvidia/lib64/libcuda.so.1',
    '/usr/lib64/libcuda.so.1',
    '/usr/lib/wsl/lib/libcuda.so.1',
  ].filter((p): p is string => Boolean(p));
}

/** Where libnvrtc.so may be; $TESSERA_NVRTC first, then the toolkit ($CUDA_HOME, /usr/local/cuda). */
export function nvrtcPaths(): string[] {
  const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter(Boolean);
  const names = ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12'];
  return [
    process.env.TESSERA_NVRTC,
    ...names,
    ...homes.flatMap((h) =>
      names.flatMap((n) => [`${h}/lib64/${n}`, `${h}/targets/x86_64-linux/lib/${n}`]),
    ),
  ].filter((p): p is string => Boolean(p));
}

/** A device allocation from the pool; `release()` returns it to the pool. */
export interface DeviceBuffer {
  readonly ptr: bigint;
  readonly bytes: number;
  release(): void;
}

/**
 * Device memory pooled on the JS side: freed blocks are kept by size class and reused, so
 * repeated runs do not call cuMemAlloc/cuMemFree. Tracks bytes in use and the peak.
 */
export class MemoryPool {
  private readonly free = new Map<number, bigint[]>();
  inUse = 0;
  peak = 0;
  reserved = 0;
  constructor(private readonly addon: CudaAddon) {}

  /** Size class: 256 B granularity below 1 MiB, then 1 MiB. */
  static sizeClass(bytes: number): number {
    const g = bytes < 1 << 20 ? 256 : 1 << 20;
    return Math.max(g, Math.ceil(bytes / g) * g);
  }

  alloc(bytes: number): DeviceBuffer {
    const size = MemoryPool.sizeClass(bytes);
    let ptr = this.free.get(size)?.pop();
    if (ptr === undefined) {
      try {
        ptr = native(() => this.addon.memAlloc(size));
      } catch (e) {
        // Out of memory with cached blocks around: give them back and retry once.
        if (this.reserved === this.inUse) throw e;
        this.trim();
        ptr = native(() => this.addon.memAlloc(size));
      }
      this.reserved += size;
    }
    this.inUse += size;
    this.peak = Math.max(this.peak, this.inUse);
    let live = true;
    const p = ptr;
    return {
      ptr: p,
      bytes,
      release: () => {
        if (!live) return;
        live = false;
        this.inUse -= size;
        const list = this.free.get(size) ?? [];
        list.push(p);
        this.free.set(size, list);
      },
    };
  }

  /** Frees every cached (unused) block. */
  trim(): void {
    for (const [size, list] of this.free) {
      for (const p of list) {
        native(() => this.addon.memFree(p));
        this.reserved -= size;
      }
    }
    this.free.clear();
  }

  resetPeak(): void {
    this.peak = this.inUse;
  }
}

/** An opened CUDA device: its properties, the pool, and thin typed wrappers over the addon. */
export class CudaDevice {
  readonly pool: MemoryPool;
  private constructor(
    readonly addon: CudaAddon,
    readonly ordinal: number,
    readonly info: DeviceInfo,
    readonly driverVersion: number,
  ) {
    this.pool = new MemoryPool(addon);
  }

  /** `sm_XY` of this device. */
  get arch(): string {
    return `sm_${this.info.major}${this.info.minor}`;
  }

  /**
   * Loads the addon and the driver, initialises CUDA and selects device `ordinal`. Rejects with
   * CudaUnavailableError ("no CUDA driver/GPU found: ...") when any of that is missing.
   */
  static open(ordinal = 0): CudaDevice {
    const addon = loadAddon();
    native(() => addon.loadDriver(driverPaths()));
    const { deviceCount, driverVersion } = native(() => addon.init());
    if (deviceCount === 0) {
      throw new CudaUnavailableError(
        'no CUDA driver/GPU found: the CUDA driver reports no devices',
        {
          call: 'cuDeviceGetCount',
          status: 100,
          statusName: 'CUDA_ERROR_NO_DEVICE',
        },
      );
    }
    if (!Number.isInteger(ordinal) || ordinal < 0 || ordinal >= deviceCount) {
      throw new UnsupportedError(
        `cuda: device ${String(ordinal)} does not exist (this machine has ${deviceCount}: 0..${deviceCount - 1})`,
      );
    }
    const info = native(() => addon.deviceInfo(ordinal));
    if (info.major < 8) {
      throw new UnsupportedError(
        `cuda: ${info.name} is sm_${info.major}${info.minor}; the generated kernels need sm_80 or newer`,
      );
    }
    native(() => addon.useDevice(ordinal));
    return new CudaDevice(addon, ordinal, info, driverVersion);
  }

  async upload(buffer: DeviceBuffer, data: ArrayBufferView): Promise<void> {
    if (data.byteLength === 0) return;
    await nativeAsync(this.addon.memcpyHtoD(buffer.ptr, data));
  }

  async download(buffer: DeviceBuffer, into: ArrayBufferView): Promise<void> {
    if (into.byteLength === 0) return;
    await nativeAsync(this.addon.memcpyDtoH(buffer.ptr, into));
  }

  fill(buffer: DeviceBuffer, byte: number): void {
    native(() => this.addon.memsetD8(buffer.ptr, byte, buffer.bytes));
  }

  synchronize(): Promise<void> {
    return nativeAsync(this.addon.ctxSynchronize());
  }

  memoryInfo(): { free: number; total: number } {
    return native(() => this.addon.memGetInfo());
  }

  /** Times `work` (enqueued on the default stream) with CUDA events; returns milliseconds. */
  async time(work: () => void): Promise<number> {
    const start = native(() => this.addon.eventCreate());
    const end = native(() => this.addon.eventCreate());
    try {
      native(() => this.addon.eventRecord(start, 0n));
      work();
      native(() => this.addon.eventRecord(end, 0n));
      await nativeAsync(this.addon.eventSynchronize(end));
      return native(() => this.addon.eventElapsedTime(start, end));
    } finally {
      native(() => this.addon.eventDestroy(start));
      native(() => this.addon.eventDestroy(end));
    }
  }

  release(): void {
    this.pool.trim();
    native(() => this.addon.releaseDevice());
  }
}
