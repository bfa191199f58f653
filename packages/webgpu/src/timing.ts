/// <reference types="@webgpu/types" preserve="true" />
/** Timing prepared runs: GPU timestamps where the device has timestamp-query, else wall time. */
import { MAP_READ_MODE, Usage } from './gpu.js';

export interface Encodable {
  encode(
    encoder: GPUCommandEncoder,
    timestamps?: { querySet: GPUQuerySet; beginIndex: number; endIndex: number },
  ): void;
}

export interface Timings {
  readonly timesMs: number[];
  readonly timing: 'device' | 'wall';
}

/** Runs `run` `warmup` times untimed, then `repeat` times timed; one time per run. */
export async function timeRuns(
  device: GPUDevice,
  run: Encodable,
  options: { warmup: number; repeat: number; timestamps: boolean },
): Promise<Timings> {
  const once = (n: number) => {
    const enc = device.createCommandEncoder();
    for (let i = 0; i < n; i++) run.encode(enc);
    device.queue.submit([enc.finish()]);
    return device.queue.onSubmittedWorkDone();
  };
  if (options.warmup > 0) await once(options.warmup);
  const repeat = options.repeat;
  if (options.timestamps) {
    const querySet = device.createQuerySet({ type: 'timestamp', count: 2 * repeat });
    const resolve = device.createBuffer({
      size: 16 * repeat,
      usage: Usage.QUERY_RESOLVE | Usage.COPY_SRC,
    });
    const read = device.createBuffer({ size: 16 * repeat, usage: Usage.MAP_READ | Usage.COPY_DST });
    const enc = device.createCommandEncoder();
    for (let i = 0; i < repeat; i++)
      run.encode(enc, { querySet, beginIndex: 2 * i, endIndex: 2 * i + 1 });
    enc.resolveQuerySet(querySet, 0, 2 * repeat, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * repeat);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(MAP_READ_MODE);
    const ticks = new BigInt64Array(read.getMappedRange().slice(0));
    read.unmap();
    for (const x of [resolve, read]) x.destroy();
    querySet.destroy();
    const timesMs: number[] = [];
    for (let i = 0; i < repeat; i++)
      timesMs.push(Number((ticks[2 * i + 1] as bigint) - (ticks[2 * i] as bigint)) / 1e6);
    if (timesMs.every((t) => t > 0)) return { timesMs, timing: 'device' };
  }
  const timesMs: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    await once(1);
    timesMs.push(performance.now() - t0);
  }
  return { timesMs, timing: 'wall' };
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
