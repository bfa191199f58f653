import { type Dtype, InputError, packHalf, unpackHalf } from '@tessera/core';
import type { CudaDevice, DeviceBuffer } from './runtime/device.js';

/** Bytes per element of a dtype. */
export const dtypeBytes = (dtype: Dtype): number => (dtype === 'f32' ? 4 : 2);

/**
 * A tensor in device memory, stored as f32, f16 or bf16. Made from / read back to Float32Array
 * (16-bit dtypes round to nearest even on upload, as core's packHalf does), so benchmarks can
 * upload once and time kernels only.
 */
export class CudaTensor {
  private disposed = false;
  constructor(
    private readonly device: CudaDevice,
    readonly buffer: DeviceBuffer,
    readonly dtype: Dtype,
    readonly length: number,
  ) {}

  get ptr(): bigint {
    if (this.disposed) throw new InputError('cuda tensor used after dispose()');
    return this.buffer.ptr;
  }

  get byteLength(): number {
    return this.length * dtypeBytes(this.dtype);
  }

  /** Allocates an uninitialised tensor. */
  static empty(device: CudaDevice, dtype: Dtype, length: number): CudaTensor {
    if (!Number.isInteger(length) || length < 0)
      throw new InputError(`tensor length must be a non-negative integer (got ${length})`);
    return new CudaTensor(device, device.pool.alloc(length * dtypeBytes(dtype)), dtype, length);
  }

  /** Uploads `data` as `dtype`. */
  static async from(device: CudaDevice, data: Float32Array, dtype: Dtype): Promise<CudaTensor> {
    if (!(data instanceof Float32Array)) throw new InputError('tensor data must be a Float32Array');
    const t = CudaTensor.empty(device, dtype, data.length);
    await t.write(data);
    return t;
  }

  /** Overwrites the contents with `data` (same length). */
  async write(data: Float32Array): Promise<void> {
    if (data.length !== this.length)
      throw new InputError(`tensor has ${this.length} elements, got ${data.length} to write`);
    await this.device.upload(this.buffer, this.dtype === 'f32' ? data : packHalf(data, this.dtype));
  }

  /** Reads the contents back as f32 values. */
  async toFloat32Array(): Promise<Float32Array> {
    if (this.dtype === 'f32') {
      const out = new Float32Array(this.length);
      await this.device.download(this.buffer, out);
      return out;
    }
    const bits = new Uint16Array(this.length);
    await this.device.download(this.buffer, bits);
    return unpackHalf(bits, this.dtype);
  }

  /** Fills every byte with `byte` (0xff poisons f32 and 16-bit values as NaN). */
  fill(byte: number): void {
    this.device.fill(this.buffer, byte);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.buffer.release();
  }
}
