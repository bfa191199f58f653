// Tessera program: project (sequence projection to 7 rows)
// x [2, 4, 45, 8], matrix [1, 1, 7, 45] -> out [2, 4, 7, 8]

const ITEMS = 448u;
const ROWS = 45u;
const COLS = 8u;
const OUT_ROWS = 7u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> matrix: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

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
  let c = idx % COLS;
  let i = (idx / COLS) % OUT_ROWS;
  let bh = idx / (COLS * OUT_ROWS);
  let x0 = bh * ROWS * COLS + c;
  var acc = 0.0f;
  for (var n = 0u; n < ROWS; n++) {
    acc = fma(matrix[i * ROWS + n], x[x0 + n * COLS], acc);
  }
  out[idx] = acc;
}
