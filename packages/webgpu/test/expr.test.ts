/// <reference types="@webgpu/types" />
// The WGSL renderer against core's JS renderer, expression by expression, on the device: integer
// wrap-around, division and remainder by zero, out-of-range loads, the hash, and operations whose
// operands are all literals (which WGSL would otherwise fold, and reject on overflow).
import {
  compileJs,
  type Expr,
  hash,
  lit,
  type TensorRef,
  tensor,
  vars,
  where,
} from '@tessera/core';
import { resolveTensors } from '@tessera/core/backend';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createWebGpuBackend,
  lowerWgsl,
  placeTensors,
  type WebGpuBackend,
  WgslExprRenderer,
} from '../src/index.js';

// Software Vulkan compiles each new pipeline on first use; under a loaded 2-core CI that can take long.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

let backend: WebGpuBackend;
beforeAll(async () => {
  backend = await createWebGpuBackend();
});
afterAll(async () => {
  await backend?.dispose();
});

const { b, h, q, kv, score } = vars;
const ft = tensor(new Float32Array([0.5, -1.25, 3, 7.5]));
const it32 = tensor(new Int32Array([10, -20, 30]));

const EXPRS: [string, Expr][] = [
  ['i32 multiply wraps', q.mul(kv).mul(1000003).mul(7919)],
  ['i32 add wraps', q.add(2147483600)],
  ['div by runtime zero is 0', q.div(kv.sub(3))],
  ['mod by runtime zero is 0, sign of dividend', q.neg().mod(kv.sub(2))],
  ['literal-only add wraps', lit(2147483647).add(lit(1)).add(q.mul(0))],
  ['literal-only min / -1', lit(-2147483647).sub(lit(1)).div(lit(-1))],
  ['literal-only div by zero', lit(5).div(lit(0))],
  ['i32 abs / neg of min', lit(-2147483647).sub(1).abs().add(q.sub(q))],
  ['f32 tensor load, out of range is 0', ft.at(q.sub(2))],
  ['i32 tensor load, far out of range', it32.at(kv.mul(100000).sub(5))],
  ['hash of indices', hash(7, b, h, q, kv)],
  ['hash of literals only', hash(1, 2, 3)],
  ['select', where(q.gt(kv), score.mul(2), score.exp())],
  [
    'tanh, sqrt, log, exp2',
    score.tanh().add(score.abs().sqrt()).add(score.abs().add(1).log()).add(score.exp2()),
  ],
  ['floor and toInt', score.mul(10).floor().add(score.mul(-7.5).toInt().toFloat())],
  ['f32 mod', score.mul(13).mod(3)],
  [
    'min / max / compare / logic',
    q
      .min(kv)
      .max(b)
      .ge(h)
      .and(q.ne(kv).or(score.lt(0).not())),
  ],
  ['bool to number', where(q.eq(kv), 1, 0).mul(q)],
];

interface Point {
  b: number;
  h: number;
  q: number;
  kv: number;
  score: number;
}

const points: Point[] = [];
for (const bq of [0, 1, 2, 3, 5, 17])
  for (const bkv of [0, 1, 2, 3, 4, 9])
    points.push({ b: bq % 2, h: (bq + bkv) % 3, q: bq, kv: bkv, score: (bq - bkv) * 0.37 + 0.11 });

async function evalOnDevice(e: Expr): Promise<{ values: Float32Array | Int32Array; type: string }> {
  const slots: TensorRef[] = [];
  const node = resolveTensors(e.node, slots);
  const renderer = new WgslExprRenderer(
    placeTensors(slots.map((t) => ({ dtype: t.dtype, length: t.length }))),
  );
  const low = lowerWgsl(node, renderer);
  const type = low.type;
  const store =
    type === 'f32'
      ? `bitcast<u32>(${low.result})`
      : type === 'i32'
        ? `bitcast<u32>(${low.result})`
        : `select(0u, 1u, ${low.result})`;
  const code = [
    '@group(0) @binding(0) var<storage, read> pts: array<u32>;',
    '@group(0) @binding(1) var<storage, read_write> res: array<u32>;',
    '@group(0) @binding(2) var<storage, read> tensors: array<u32>;',
    renderer.helperSource(),
    '@compute @workgroup_size(1)',
    'fn main(@builtin(workgroup_id) g: vec3<u32>) {',
    '  let i = g.x;',
    '  let b = bitcast<i32>(pts[i * 5u]);',
    '  let h = bitcast<i32>(pts[i * 5u + 1u]);',
    '  let q = bitcast<i32>(pts[i * 5u + 2u]);',
    '  let kv = bitcast<i32>(pts[i * 5u + 3u]);',
    '  let score = bitcast<f32>(pts[i * 5u + 4u]);',
    '  let keep = tensors[0] + u32(b + h + q + kv) + bitcast<u32>(score);',
    ...low.statements.map((s) => `  ${s}`),
    `  res[i] = ${store} + keep * 0u;`,
    '}',
  ].join('\n');
  const device = backend.gpuDevice;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const err = await device.popErrorScope();
  const messages = info.messages.filter((m) => m.type === 'error').map((m) => m.message);
  if (messages.length > 0 || err)
    throw new Error(`${messages.join('\n')} ${err?.message ?? ''}\n${code}`);
  const pipeline = await device.createComputePipelineAsync({
    layout: 'auto',
    compute: { module, entryPoint: 'main' },
  });
  const pts = new Uint32Array(points.length * 5);
  const view = new DataView(pts.buffer);
  points.forEach((p, i) => {
    view.setInt32(i * 20, p.b, true);
    view.setInt32(i * 20 + 4, p.h, true);
    view.setInt32(i * 20 + 8, p.q, true);
    view.setInt32(i * 20 + 12, p.kv, true);
    view.setFloat32(i * 20 + 16, p.score, true);
  });
  const words = new Uint32Array(
    Math.max(
      1,
      slots.reduce((n, t) => n + t.length, 0),
    ),
  );
  let o = 0;
  for (const t of slots) {
    words.set(new Uint32Array(t.data.buffer, t.data.byteOffset, t.length), o);
    o += t.length;
  }
  const mk = (data: Uint32Array<ArrayBuffer>, usage: number) => {
    const buf = device.createBuffer({ size: Math.max(16, data.byteLength), usage });
    device.queue.writeBuffer(buf, 0, data);
    return buf;
  };
  const ptsBuf = mk(pts, 0x80 | 0x08);
  const tBuf = mk(words, 0x80 | 0x08);
  const res = device.createBuffer({ size: points.length * 4, usage: 0x80 | 0x04 });
  const read = device.createBuffer({ size: points.length * 4, usage: 0x01 | 0x08 });
  const bg = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: ptsBuf } },
      { binding: 1, resource: { buffer: res } },
      { binding: 2, resource: { buffer: tBuf } },
    ],
  });
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bg);
  pass.dispatchWorkgroups(points.length);
  pass.end();
  enc.copyBufferToBuffer(res, 0, read, 0, points.length * 4);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(1);
  const raw = read.getMappedRange().slice(0);
  read.unmap();
  for (const x of [ptsBuf, tBuf, res, read]) x.destroy();
  return { values: type === 'f32' ? new Float32Array(raw) : new Int32Array(raw), type };
}

describe('WGSL expression renderer matches the JS reference', () => {
  for (const [name, e] of EXPRS) {
    it(name, async () => {
      const { values, type } = await evalOnDevice(e);
      const slots: TensorRef[] = [];
      const node = resolveTensors(e.node, slots);
      const f = compileJs(
        node,
        slots.map((t) => t.data),
      );
      points.forEach((p, i) => {
        const want = f(p.b, p.h, p.q, p.kv, p.score);
        const got = values[i] as number;
        if (type === 'f32') {
          const w = want as number;
          expect(Math.abs(got - w), `${name} at ${JSON.stringify(p)}`).toBeLessThanOrEqual(
            1e-5 * Math.max(1, Math.abs(w)),
          );
        } else if (type === 'bool') {
          expect(got, `${name} at ${JSON.stringify(p)}`).toBe(want ? 1 : 0);
        } else {
          expect(got, `${name} at ${JSON.stringify(p)}`).toBe(want);
        }
      });
    });
  }
});
