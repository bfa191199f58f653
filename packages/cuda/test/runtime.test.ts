import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TesseraError } from '@tessera/core';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CudaDevice,
  CudaError,
  CudaUnavailableError,
  createCudaBackend,
  emitCuda,
  KernelCompiler,
  loadAddon,
  MemoryPool,
  readCacheEntry,
  writeCacheEntry,
} from '../src/index.js';
import { generatorCases } from './cases.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'tessera-cuda-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the addon on a machine without a GPU', () => {
  it('loads (it links no CUDA library) and exposes the driver, memory, module, launch and NVRTC calls', () => {
    const addon = loadAddon();
    expect(addon.abi).toBe(1);
    for (const f of [
      'memAlloc',
      'memcpyHtoD',
      'moduleLoadData',
      'launch',
      'eventElapsedTime',
      'nvrtcCompile',
    ])
      expect(typeof (addon as unknown as Record<string, unknown>)[f]).toBe('function');
  });

  it('createCudaBackend rejects with the typed "no CUDA driver/GPU found" error', async () => {
    const err = await createCudaBackend().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CudaUnavailableError);
    expect(err).toBeInstanceOf(CudaError);
    expect(err).toBeInstanceOf(TesseraError);
    expect((err as CudaUnavailableError).code).toBe('ERR_CUDA_UNAVAILABLE');
    expect((err as Error).message).toMatch(/^no CUDA driver\/GPU found: /);
    expect((err as CudaUnavailableError).call).toBe('dlopen');
  });

  it('CudaDevice.open names the library it could not load', () => {
    expect(() => CudaDevice.open(0)).toThrow(/libcuda\.so\.1/);
  });

  it('calls that need a device fail with a typed error, not a crash', () => {
    const addon = loadAddon();
    let err: unknown;
    try {
      addon.memAlloc(16);
    } catch (e) {
      err = e;
    }
    expect((err as { kind?: string }).kind).toBe('unavailable');
  });
});

describe('the kernel cache', () => {
  it('detects a corrupt entry by its checksum and deletes it', () => {
    const dir = tempDir();
    const file = join(dir, 'k.bin');
    const image = Uint8Array.from({ length: 300 }, (_, i) => (i * 37) & 255);
    writeCacheEntry(file, image, 'cubin');
    expect(readCacheEntry(file)?.image).toEqual(image);
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 1;
    writeFileSync(file, bytes);
    expect(readCacheEntry(file)).toBeNull();
    expect(readdirSync(dir)).toEqual([]);
    writeFileSync(file, 'not a cache entry');
    expect(readCacheEntry(file)).toBeNull();
  });

  it('compiles with nvcc when NVRTC is missing, caches on disk, and rebuilds a corrupt entry', async () => {
    const dir = tempDir();
    const spec = generatorCases['simt-f32-odd-dims'];
    if (!spec) throw new Error('missing case');
    const { source } = emitCuda(spec);
    const first = await KernelCompiler.create({ addon: null, arch: 'sm_90', cacheDir: dir });
    expect(first.compiler).toMatch(/^nvcc-\d+\.\d+$/);
    const built = await first.compile(source, spec.hash);
    expect(built.from).toBe('compiled');
    expect(Buffer.from(built.image.subarray(0, 4)).toString('latin1')).toBe('\x7fELF');
    expect((await first.compile(source, spec.hash)).from).toBe('memory');

    const second = await KernelCompiler.create({ addon: null, arch: 'sm_90', cacheDir: dir });
    const fromDisk = await second.compile(source, spec.hash);
    expect(fromDisk.from).toBe('disk');
    expect(fromDisk.image).toEqual(built.image);

    const [entry] = readdirSync(dir);
    expect(entry).toContain(spec.hash);
    expect(entry).toContain('sm_90');
    const path = join(dir, entry as string);
    const bytes = readFileSync(path);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    writeFileSync(path, bytes);
    const third = await KernelCompiler.create({ addon: null, arch: 'sm_90', cacheDir: dir });
    const rebuilt = await third.compile(source, spec.hash);
    expect(rebuilt.from).toBe('compiled');
    expect(rebuilt.image).toEqual(built.image);
    expect(readCacheEntry(path)?.image).toEqual(built.image);
  }, 60_000);

  it('keys entries by architecture and compiler as well as source', async () => {
    const a = await KernelCompiler.create({ addon: null, arch: 'sm_90', cacheDir: null });
    const b = await KernelCompiler.create({ addon: null, arch: 'sm_80', cacheDir: null });
    expect(a.key('x')).not.toBe(b.key('x'));
    expect(a.key('x')).not.toBe(a.key('y'));
  });

  it('reports nvcc compile errors with the compiler log', async () => {
    const c = await KernelCompiler.create({ addon: null, arch: 'sm_90', cacheDir: null });
    await expect(c.compile('this is not CUDA', 'bad')).rejects.toMatchObject({
      code: 'ERR_CUDA_COMPILE',
      call: 'nvcc',
      log: expect.stringContaining('error'),
    });
  });
});

describe('MemoryPool', () => {
  it('rounds requests to reusable size classes', () => {
    expect(MemoryPool.sizeClass(1)).toBe(256);
    expect(MemoryPool.sizeClass(257)).toBe(512);
    expect(MemoryPool.sizeClass((1 << 20) + 1)).toBe(2 << 20);
  });
});
