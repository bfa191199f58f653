// Tessera program: gate (3 sigmoid-gated branches)
// x [2, 4, 45, 8], weight [1, 3, 4, 8], bias [1, 1, 3, 4] -> out [2, 4, 45, 6]

const ITEMS = 2160u;
const HEADS = 4u;
const ROWS = 45u;
const X_COLS = 8u;
const COLS = 6u;
const BRANCHES = 3u;
const BRANCH_SIZE = 2160u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> branches: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// σ(g) without overflowing exp for large |g|.
fn sigmoid(g: f32) -> f32 {
  let e = exp(-abs(g));
  return select(e / (1.0f + e), 1.0f / (1.0f + e), g >= 0.0f);
}

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
  let row = idx / COLS;
  let h = (row / ROWS) % HEADS;
  let x0 = row * X_COLS;
  var acc = 0.0f;
  for (var br = 0u; br < BRANCHES; br++) {
    let gh = br * HEADS + h;
    var g = bias[gh];
    for (var d = 0u; d < X_COLS; d++) {
      g = fma(x[x0 + d], weight[gh * X_COLS + d], g);
    }
    acc = fma(sigmoid(g), branches[br * BRANCH_SIZE + idx], acc);
  }
  out[idx] = acc;
}
