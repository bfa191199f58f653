// Tessera program: group, routing (each row to the nearest of 5 centroids by dot product)
// x [2, 4, 45, 8], centroids [1, 4, 5, 8] -> cluster per row

const ITEMS = 360u;
const HEADS = 4u;
const ROWS = 45u;
const COLS = 8u;
const CLUSTERS = 5u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> centroids: array<f32>;
@group(0) @binding(2) var<storage, read_write> cluster: array<u32>;

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
  let h = (idx / ROWS) % HEADS;
  let x0 = idx * COLS;
  var best = 0u;
  var best_s = 0.0f;
  for (var c = 0u; c < CLUSTERS; c++) {
    let c0 = (h * CLUSTERS + c) * COLS;
    var s = 0.0f;
    for (var d = 0u; d < COLS; d++) {
      s = fma(x[x0 + d], centroids[c0 + d], s);
    }
    if (c == 0u || s > best_s) {
      best = c;
      best_s = s;
    }
  }
  cluster[idx] = best;
}
