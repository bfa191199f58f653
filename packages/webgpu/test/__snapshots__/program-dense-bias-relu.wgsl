// Tessera program: dense (per-head projection + bias, relu)
// x [2, 4, 45, 8], weight [1, 4, 8, 5] -> out [2, 4, 45, 5]

const ITEMS = 1800u;
const HEADS = 4u;
const ROWS = 45u;
const COLS = 8u;
const OUT_COLS = 5u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let idx = (wg.y * groups.x + wg.x) * 64u + lid;
  if (idx >= ITEMS) {
    return;
  }
  let o = idx % OUT_COLS;
  let row = idx / OUT_COLS;
  let h = (row / ROWS) % HEADS;
  let x0 = row * COLS;
  let w0 = h * COLS * OUT_COLS + o;
  var acc = bias[h * OUT_COLS + o];
  for (var c = 0u; c < COLS; c++) {
    acc = fma(x[x0 + c], weight[w0 + c * OUT_COLS], acc);
  }
  out[idx] = max(acc, 0.0f);
}
