// Tessera program: group, stable counting sort of each (batch, head) slice's rows by cluster
// 8 slices of 45 rows, 5 clusters; one workgroup per slice, tiles of 64 rows

const SLICES = 8u;
const ROWS = 45u;
const CLUSTERS = 5u;
const T = 64u;

@group(0) @binding(0) var<storage, read> cluster: array<u32>;
@group(0) @binding(1) var<storage, read_write> grouping: array<u32>;

var<workgroup> count: array<atomic<u32>, CLUSTERS>;
// The place the next row of each cluster takes.
var<workgroup> next: array<u32, CLUSTERS>;
var<workgroup> tile: array<u32, T>;

@compute @workgroup_size(64)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) groups: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let slice = wg.y * groups.x + wg.x;
  if (slice >= SLICES) {
    return; // the whole workgroup: uniform
  }
  let base = slice * ROWS;
  for (var c = lid; c < CLUSTERS; c += T) {
    atomicStore(&count[c], 0u);
  }
  workgroupBarrier();
  for (var t = lid; t < ROWS; t += T) {
    atomicAdd(&count[cluster[base + t]], 1u);
  }
  workgroupBarrier();
  // Exclusive scan of the histogram: the first place of each cluster.
  if (lid == 0u) {
    var run = 0u;
    for (var c = 0u; c < CLUSTERS; c++) {
      next[c] = run;
      run += atomicLoad(&count[c]);
    }
  }
  workgroupBarrier();
  // Tiles of T rows in row order; within a tile, rows of one cluster keep their row order.
  for (var t0 = 0u; t0 < ROWS; t0 += T) {
    let t = t0 + lid;
    let live = t < ROWS;
    let n = min(T, ROWS - t0);
    var c = CLUSTERS; // no cluster: a thread past the last row
    if (live) {
      c = cluster[base + t];
    }
    tile[lid] = c;
    workgroupBarrier();
    var before = 0u;
    var same = 0u;
    for (var u = 0u; u < n; u++) {
      let hit = select(0u, 1u, tile[u] == c);
      same += hit;
      before += select(0u, hit, u < lid);
    }
    if (live) {
      let r = next[c] + before;
      grouping[base + t] = r;
      grouping[SLICES * ROWS + base + r] = t;
    }
    workgroupBarrier();
    // The cluster's last row in the tile moves its next place past the tile's rows.
    if (live && before + 1u == same) {
      next[c] += same;
    }
    workgroupBarrier();
  }
}
