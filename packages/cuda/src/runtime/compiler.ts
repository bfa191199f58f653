import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CudaCompileError, CudaError, nativeAsync } from '../errors.js';
import type { CudaAddon } from './addon.js';

/** A compiled module image. */
export interface CompiledImage {
  readonly image: Uint8Array;
  readonly format: 'cubin' | 'ptx';
  /** e.g. `nvrtc-13.0` or `nvcc-13.0`: part of the cache key. */
  readonly compiler: string;
  readonly log: string;
  /** Where it came from this time. */
  readonly from: 'memory' | 'disk' | 'compiled';
}

/** Options every generated module is compiled with (NVRTC and nvcc alike). */
export const COMPILE_FLAGS = ['-std=c++17'];

/** Default on-disk cache: $TESSERA_CUDA_CACHE, else $XDG_CACHE_HOME/tessera/cuda, else ~/.cache/tessera/cuda. */
export function defaultCacheDir(): string {
  if (process.env.TESSERA_CUDA_CACHE) return process.env.TESSERA_CUDA_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'tessera', 'cuda');
}

/** Finds nvcc: $NVCC, $CUDA_HOME/bin, /usr/local/cuda/bin, then PATH. Null when none. */
export function findNvcc(): string | null {
  const candidates = [
    process.env.NVCC,
    process.env.CUDA_HOME && join(process.env.CUDA_HOME, 'bin', 'nvcc'),
    '/usr/local/cuda/bin/nvcc',
    ...(process.env.PATH ?? '').split(':').map((d) => join(d, 'nvcc')),
  ];
  return candidates.find((p): p is string => Boolean(p) && existsSync(p as string)) ?? null;
}

function run(file: string, args: readonly string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

/** `release X.Y` from `nvcc --version`. */
export async function nvccVersion(nvcc: string): Promise<string> {
  const { out } = await run(nvcc, ['--version']);
  return /release (\d+\.\d+)/.exec(out)?.[1] ?? 'unknown';
}

/**
 * Compiles CUDA C++ to a cubin with `nvcc -cubin` in a child process (the fallback when NVRTC is
 * missing, and what CI uses to check every generated kernel). `extraArgs` e.g. ['-Xptxas', '-v'].
 */
export async function compileWithNvcc(
  source: string,
  options: { arch: string; nvcc?: string; extraArgs?: readonly string[] },
): Promise<{ image: Uint8Array; log: string }> {
  const nvcc = options.nvcc ?? findNvcc();
  if (!nvcc) {
    throw new CudaError(
      'cuda: neither NVRTC nor nvcc is available to compile kernels (set NVCC or CUDA_HOME)',
      {
        call: 'nvcc',
        statusName: 'NO_COMPILER',
      },
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'tessera-nvcc-'));
  try {
    const src = join(dir, 'kernel.cu');
    const out = join(dir, 'kernel.cubin');
    writeFileSync(src, source);
    const args = [
      '-cubin',
      `-arch=${options.arch}`,
      ...COMPILE_FLAGS,
      ...(options.extraArgs ?? []),
      '-o',
      out,
      src,
    ];
    const { code, out: log } = await run(nvcc, args);
    if (code !== 0 || !existsSync(out)) {
      throw new CudaCompileError(`nvcc failed on generated CUDA (${options.arch}):\n${log}`, {
        call: 'nvcc',
        log,
        status: code,
      });
    }
    return { image: new Uint8Array(readFileSync(out)), log };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const MAGIC = 'TSRCUBIN1\n';

/** Writes a cache entry: magic, sha256 of the payload, payload. */
export function writeCacheEntry(file: string, image: Uint8Array, format: 'cubin' | 'ptx'): void {
  const digest = createHash('sha256').update(image).digest('hex');
  const header = Buffer.from(`${MAGIC}${format}\n${digest}\n`);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, Buffer.concat([header, image]));
  renameSync(tmp, file); // atomic: readers never see half an entry
}

/** Reads a cache entry; null when missing, or when corrupt (the entry is then deleted). */
export function readCacheEntry(
  file: string,
): { image: Uint8Array; format: 'cubin' | 'ptx' } | null {
  if (!existsSync(file)) return null;
  const bytes = readFileSync(file);
  const text = bytes.subarray(0, 128).toString('latin1');
  const m = /^TSRCUBIN1\n(cubin|ptx)\n([0-9a-f]{64})\n/.exec(text);
  if (m) {
    const image = new Uint8Array(bytes.subarray((m[0] as string).length));
    if (createHash('sha256').update(image).digest('hex') === m[2])
      return { image, format: m[1] as 'cubin' | 'ptx' };
  }
  rmSync(file, { force: true });
  return null;
}

/**
 * Compiles generated modules for one device architecture: NVRTC through the addon when libnvrtc
 * loads, else nvcc. Results are cached in memory and on disk under a key of source hash (which
 * covers the spec hash and generator version) + architecture + compiler version; corrupt disk
 * entries fail their checksum and are rebuilt.
 */
export class KernelCompiler {
  private readonly memory = new Map<string, CompiledImage>();
  private constructor(
    private readonly addon: CudaAddon | null,
    readonly arch: string,
    readonly compiler: string,
    readonly cacheDir: string | null,
    private readonly nvcc: string | null,
  ) {}

  static async create(options: {
    addon: CudaAddon | null;
    arch: string;
    cacheDir?: string | null;
    prefer?: 'auto' | 'nvrtc' | 'nvcc';
  }): Promise<KernelCompiler> {
    const prefer = options.prefer ?? 'auto';
    const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
    if (prefer !== 'nvcc' && options.addon) {
      const { nvrtcPaths } = await import('./device.js');
      const loaded = options.addon.loadNvrtc(nvrtcPaths());
      if (loaded && loaded !== true) {
        return new KernelCompiler(
          options.addon,
          options.arch,
          `nvrtc-${loaded.version}`,
          cacheDir,
          null,
        );
      }
      if (loaded === true)
        return new KernelCompiler(options.addon, options.arch, 'nvrtc', cacheDir, null);
      if (prefer === 'nvrtc') {
        throw new CudaError(
          'cuda: libnvrtc.so could not be loaded (set TESSERA_NVRTC or CUDA_HOME)',
          {
            call: 'dlopen',
            statusName: 'NO_NVRTC',
          },
        );
      }
    }
    const nvcc = findNvcc();
    if (!nvcc) {
      throw new CudaError(
        'cuda: no kernel compiler: libnvrtc.so did not load and nvcc was not found',
        {
          call: 'dlopen',
          statusName: 'NO_COMPILER',
        },
      );
    }
    return new KernelCompiler(
      null,
      options.arch,
      `nvcc-${await nvccVersion(nvcc)}`,
      cacheDir,
      nvcc,
    );
  }

  /** The cache key of a module source under this compiler and architecture. */
  key(source: string): string {
    return createHash('sha256')
      .update(`${source}\0${this.arch}\0${this.compiler}\0${COMPILE_FLAGS.join(' ')}`)
      .digest('hex')
      .slice(0, 32);
  }

  async compile(source: string, label: string): Promise<CompiledImage> {
    const key = this.key(source);
    const hit = this.memory.get(key);
    if (hit) return { ...hit, from: 'memory' };
    const file = this.cacheDir
      ? join(this.cacheDir, `${label}-${this.arch}-${this.compiler}-${key}.bin`)
      : null;
    const disk = file ? readCacheEntry(file) : null;
    if (disk) {
      const img: CompiledImage = { ...disk, compiler: this.compiler, log: '', from: 'disk' };
      this.memory.set(key, img);
      return img;
    }
    const built = await this.build(source, label);
    if (file && this.cacheDir) {
      try {
        mkdirSync(this.cacheDir, { recursive: true });
        writeCacheEntry(file, built.image, built.format);
      } catch {
        // An unwritable cache only costs a recompile next time.
      }
    }
    this.memory.set(key, built);
    return built;
  }

  private async build(source: string, label: string): Promise<CompiledImage> {
    if (this.addon) {
      const r = await nativeAsync(
        this.addon.nvrtcCompile(source, `${label}.cu`, [
          `--gpu-architecture=${this.arch}`,
          ...COMPILE_FLAGS,
        ]),
      );
      if (!r.ok || !r.image) {
        throw new CudaCompileError(`NVRTC failed on generated CUDA (${this.arch}):\n${r.log}`, {
          call: 'nvrtcCompileProgram',
          log: r.log,
          status: r.status,
        });
      }
      return {
        image: r.image,
        format: r.format ?? 'cubin',
        compiler: this.compiler,
        log: r.log,
        from: 'compiled',
      };
    }
    const { image, log } = await compileWithNvcc(source, {
      arch: this.arch,
      nvcc: this.nvcc ?? undefined,
    });
    return { image, format: 'cubin', compiler: this.compiler, log, from: 'compiled' };
  }
}
