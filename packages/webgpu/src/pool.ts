/// <reference types="@webgpu/types" preserve="true" />
/** Reuses device buffers of equal size and usage between runs; destroys what it holds on clear. */
export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private pooledBytes = 0;

  constructor(
    private readonly device: GPUDevice,
    /** Free buffers beyond this many bytes are destroyed rather than kept. */
    private readonly maxPooledBytes = 256 * 1024 * 1024,
  ) {}

  acquire(size: number, usage: number, label: string): GPUBuffer {
    const bytes = Math.max(16, Math.ceil(size / 16) * 16);
    const list = this.free.get(`${usage}:${bytes}`);
    const hit = list?.pop();
    if (hit) {
      this.pooledBytes -= bytes;
      return hit;
    }
    return this.device.createBuffer({ size: bytes, usage, label });
  }

  release(buffer: GPUBuffer): void {
    const bytes = buffer.size;
    if (this.pooledBytes + bytes > this.maxPooledBytes) {
      buffer.destroy();
      return;
    }
    const key = `${buffer.usage}:${bytes}`;
    let list = this.free.get(key);
    if (!list) {
      list = [];
      this.free.set(key, list);
    }
    list.push(buffer);
    this.pooledBytes += bytes;
  }

  clear(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.pooledBytes = 0;
  }
}
