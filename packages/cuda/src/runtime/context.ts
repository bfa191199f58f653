import { ResourceLimitError } from '@tessera/core';
import type { KernelEntry } from '../emit/common.js';
import { native } from '../errors.js';
import type { KernelCompiler } from './compiler.js';
import type { CudaDevice } from './device.js';

const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const STATIC_SHARED_LIMIT = 48 * 1024;

/** What a module needs to be compiled and loaded: its source and its kernels. */
export interface ModuleText {
  readonly source: string;
  readonly kernels: readonly KernelEntry[];
}

/** A loaded module: its handle and one function handle per kernel, in the module's order. */
export interface LoadedModule {
  readonly module: bigint;
  readonly functions: bigint[];
}

/**
 * The bottom of the backend: the device, the compiler and the loaded-module cache (keyed by the
 * compiler's source key). The façade, the program steps and the backward pass all build on it;
 * it imports none of them.
 */
export class CudaContext {
  private readonly modules = new Map<string, Promise<LoadedModule>>();

  constructor(
    readonly cuda: CudaDevice,
    readonly compiler: KernelCompiler,
  ) {}

  /** Compiles (cached by source) and loads a module; raises the shared-memory limit where needed. */
  loadModule(module: ModuleText, label: string): Promise<LoadedModule> {
    const key = this.compiler.key(module.source);
    let m = this.modules.get(key);
    if (!m) {
      m = (async () => {
        const compiled = await this.compiler.compile(module.source, label);
        const handle = native(() => this.cuda.addon.moduleLoadData(compiled.image));
        const functions = module.kernels.map((k) =>
          native(() => this.cuda.addon.moduleGetFunction(handle, k.name)),
        );
        module.kernels.forEach((k, i) => {
          if (k.dynamicSharedBytes > this.cuda.info.maxSharedPerBlockOptin) {
            throw new ResourceLimitError(
              `cuda: kernel ${k.name} needs ${k.dynamicSharedBytes} bytes of shared memory; ${this.cuda.info.name} allows ${this.cuda.info.maxSharedPerBlockOptin} per block`,
            );
          }
          if (k.dynamicSharedBytes > STATIC_SHARED_LIMIT) {
            const fn = functions[i] as bigint;
            native(() =>
              this.cuda.addon.funcSetAttribute(
                fn,
                CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                k.dynamicSharedBytes,
              ),
            );
          }
        });
        return { module: handle, functions };
      })();
      this.modules.set(key, m);
      m.catch(() => this.modules.delete(key));
    }
    return m;
  }

  /** Enqueues one kernel on the default stream with its packed parameter struct. */
  launch(
    fn: bigint,
    entry: KernelEntry,
    grid: readonly [number, number, number],
    params: Uint8Array,
  ): void {
    native(() =>
      this.cuda.addon.launch(fn, grid, [entry.threads, 1, 1], entry.dynamicSharedBytes, 0n, params),
    );
  }

  /** Unloads every module (at dispose). */
  async unloadAll(): Promise<void> {
    for (const m of this.modules.values()) {
      const loaded = await m.catch(() => null);
      if (loaded) native(() => this.cuda.addon.moduleUnload(loaded.module));
    }
    this.modules.clear();
  }
}
