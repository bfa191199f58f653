"""Peers for tessera-bench: PyTorch SDPA and FlexAttention on the cases the CLI sends on stdin.

Reads {"warmup", "repeat", "cases": [{id, variant, seq, batch, heads, headsKV, dim, dtype, peer}]}
and prints one JSON object per (case, peer) on stdout. Times are CUDA-event medians over
`repeat` runs after `warmup`, with two input sets used in turn.
"""
import json
import sys

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def emit(**kw):
    print(json.dumps(kw), flush=True)


def time_ms(fn, warmup, repeat):
    for _ in range(warmup):
        fn(0)
    torch.cuda.synchronize()
    times = []
    for i in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]
    return q(0.5), q(0.1), q(0.9)


def block_mask_from_layout(peer, n):
    """FlexAttention's BlockMask from our layout: every listed block is full, the rest skipped."""
    from torch.nn.attention.flex_attention import BlockMask

    rows = peer["rows"]
    nq, nk = len(rows), -(-n // peer["block"])
    counts = torch.tensor([len(r) for r in rows], dtype=torch.int32, device="cuda").view(1, 1, nq)
    idx = torch.zeros((1, 1, nq, nk), dtype=torch.int32, device="cuda")
    for i, r in enumerate(rows):
        if r:
            idx[0, 0, i, : len(r)] = torch.tensor(r, dtype=torch.int32, device="cuda")
    return BlockMask.from_kv_blocks(
        torch.zeros_like(counts), torch.zeros_like(idx), counts, idx, BLOCK_SIZE=peer["block"], seq_lengths=(n, n)
    )


def mask_mod_for(peer):
    kind = peer["kind"]
    if kind == "causal":
        return lambda b, h, q, kv: q >= kv
    if kind == "sliding-window":
        w = peer["window"]
        return lambda b, h, q, kv: (q >= kv) & (q - kv < w)
    return None


def main():
    cfg = json.load(sys.stdin)
    if not torch.cuda.is_available():
        print("peers need a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(3)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as e:  # noqa: BLE001 - report and go on with SDPA alone
        flex = None
        flex_error = str(e)
    for c in cfg["cases"]:
        dt = DTYPES[c["dtype"]]
        B, H, HK, N, D = c["batch"], c["heads"], c["headsKV"], c["seq"], c["dim"]
        gen = torch.Generator(device="cuda").manual_seed(1)
        sets = [
            tuple(
                torch.rand(shape, device="cuda", dtype=torch.float32, generator=gen).mul_(2).sub_(1).to(dt)
                for shape in ((B, H, N, D), (B, HK, N, D), (B, HK, N, D))
            )
            for _ in range(2)
        ]
        gqa = H != HK
        kind = c["peer"]["kind"]
        common = dict(caseId=c["id"], variant=c["variant"], seq=N)
        if kind in ("dense", "causal"):
            try:
                causal = kind == "causal"
                fn = lambda i: F.scaled_dot_product_attention(*sets[i % 2], is_causal=causal, enable_gqa=gqa)
                m, p10, p90 = time_ms(fn, cfg["warmup"], cfg["repeat"])
                emit(peer="sdpa", status="ok", ms=m, p10=p10, p90=p90, **common)
            except Exception as e:  # noqa: BLE001
                emit(peer="sdpa", status="failed", message=str(e)[:300], **common)
        mm = mask_mod_for(c["peer"])
        from_layout = kind == "block-layout"
        if mm is None and not from_layout:
            continue
        if flex is None:
            emit(peer="flex", status="unsupported", message=flex_error[:300], **common)
            continue
        try:
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            if from_layout:
                block_mask = block_mask_from_layout(c["peer"], N)
            else:
                block_mask = create_block_mask(mm, None, None, N, N, device="cuda")
            end.record()
            end.synchronize()
            build_ms = start.elapsed_time(end)
            fn = lambda i: flex(*sets[i % 2], block_mask=block_mask, enable_gqa=gqa)
            m, p10, p90 = time_ms(fn, cfg["warmup"], cfg["repeat"])
            emit(peer="flex", status="ok", ms=m, p10=p10, p90=p90, maskBuildMs=build_ms, **common)
        except Exception as e:  # noqa: BLE001
            emit(peer="flex", status="failed", message=str(e)[:300], **common)


if __name__ == "__main__":
    main()
