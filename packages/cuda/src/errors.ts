import { TesseraError } from '@tessera/core';

/** What the addon attaches to the errors it throws (see native/addon.cc). */
export interface NativeErrorInfo {
  readonly kind?: 'cuda' | 'nvrtc' | 'unavailable';
  readonly call?: string;
  readonly status?: number;
  readonly statusName?: string;
}

/** A CUDA driver or NVRTC call failed: names the call and the CUDA error (name and string). */
export class CudaError extends TesseraError {
  /** The driver/NVRTC entry point that failed, e.g. `cuLaunchKernel`. */
  readonly call: string;
  /** The CUresult / nvrtcResult number (-1 when no CUDA call was reached). */
  readonly status: number;
  /** e.g. `CUDA_ERROR_OUT_OF_MEMORY`. */
  readonly statusName: string;
  constructor(
    message: string,
    info: { call: string; status?: number; statusName?: string; code?: string; cause?: unknown },
  ) {
    super(info.code ?? 'ERR_CUDA', message, { cause: info.cause });
    this.call = info.call;
    this.status = info.status ?? -1;
    this.statusName = info.statusName ?? 'UNKNOWN';
  }
}

/** No usable CUDA driver or GPU on this machine (or the addon could not be loaded). */
export class CudaUnavailableError extends CudaError {
  constructor(
    message: string,
    info: { call: string; status?: number; statusName?: string; cause?: unknown },
  ) {
    super(message, { ...info, code: 'ERR_CUDA_UNAVAILABLE' });
  }
}

/** Generated CUDA C++ failed to compile (NVRTC or nvcc); `log` holds the compiler's output. */
export class CudaCompileError extends CudaError {
  readonly log: string;
  constructor(message: string, info: { call: string; log: string; status?: number }) {
    super(message, {
      call: info.call,
      status: info.status,
      statusName: 'COMPILATION',
      code: 'ERR_CUDA_COMPILE',
    });
    this.log = info.log;
  }
}

/** Turns an error thrown by the addon into the matching typed error; others pass through. */
export function fromNative(e: unknown): unknown {
  if (!(e instanceof Error) || e instanceof TesseraError) return e;
  const info = e as Error & NativeErrorInfo;
  if (info.kind === undefined || info.call === undefined) return e;
  const fields = { call: info.call, status: info.status, statusName: info.statusName, cause: e };
  return info.kind === 'unavailable'
    ? new CudaUnavailableError(e.message, fields)
    : new CudaError(e.message, fields);
}

/** Runs `f`, rethrowing addon errors as typed ones. */
export function native<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromNative(e);
  }
}

/** Awaits `p`, rethrowing addon errors as typed ones. */
export async function nativeAsync<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw fromNative(e);
  }
}
