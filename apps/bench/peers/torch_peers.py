"""Peers for tessera-bench: PyTorch SDPA and FlexAttention on the cases the CLI sends on stdin.

Reads {"warmup", "repeat", "backward", "cases": [{id, variant, seq, batch, heads, headsKV, dim,
dtype, peer}]} and prints one JSON object per (case, peer, mode) on stdout. Times are CUDA-event
medians over `repeat` runs after `warmup`, with two input sets used in turn.

With "backward": true each peer is also timed forward + backward (torch.autograd.grad of q, k, v
and of any learnable captured tensor, with a seeded dOut) and forward alone under the same
autograd conditions; the backward time is the difference of the two medians (mode "backward").
A run that takes over a second is repeated fewer times (at least 2; about 30 s in all).
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


def event_ms(fn):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_ms_budget(fn, warmup, repeat, slow_ms=1000.0, budget_ms=30000.0):
    """Like time_ms, but a run slower than slow_ms (after the first, which compiles) cuts the
    warm-up short and the timed runs to about budget_ms in all (at least 2). Returns n too."""
    torch.cuda.synchronize()
    last = 0.0
    for i in range(max(warmup, 1)):
        last = event_ms(lambda: fn(i))
        if i >= 1 and last > slow_ms:
            break
    if last > slow_ms:
        repeat = max(2, min(repeat, int(budget_ms // last)))
    times = sorted(event_ms(lambda i=i: fn(i)) for i in range(repeat))
    q = lambda p: times[min(len(times) - 1, int(round(p * (len(times) - 1))))]
    return q(0.5), q(0.1), q(0.9), len(times)


def backward_peer(name, attend, sets, learnable, cfg, common):
    """Times attend(q, k, v, *learnable) forward alone and forward + backward; emits mode backward."""
    try:
        gen = torch.Generator(device="cuda").manual_seed(2)
        grad_sets = []
        for q, k, v in sets:
            leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
            leaves += [t.detach().clone().requires_grad_(True) for t in learnable]
            d_out = torch.rand(q.shape[:-1] + (v.shape[-1],), device="cuda", dtype=torch.float32,
                               generator=gen).mul_(2).sub_(1).to(q.dtype)
            grad_sets.append((leaves, d_out))

        def fwd(i):
            leaves, _ = grad_sets[i % 2]
            attend(*leaves)

        def fwd_bwd(i):
            leaves, d_out = grad_sets[i % 2]
            out = attend(*leaves)
            torch.autograd.grad(out, leaves, d_out)

        f, _, _, nf = time_ms_budget(fwd, cfg["warmup"], cfg["repeat"])
        fb, p10, p90, nfb = time_ms_budget(fwd_bwd, cfg["warmup"], cfg["repeat"])
        # Peak memory of one warm forward + backward beyond what is allocated before it.
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fwd_bwd(0)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        emit(peer=name, mode="backward", status="ok", ms=fb - f, fwdMs=f, fwdBwdMs=fb, p10=p10,
             p90=p90, n=min(nf, nfb), peakExtraBytes=peak, **common)
    except Exception as e:  # noqa: BLE001
        emit(peer=name, mode="backward", status="failed", message=str(e)[:300], **common)


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
    if kind in ("causal", "causal-alibi"):
        return lambda b, h, q, kv: q >= kv
    if kind == "sliding-window":
        w = peer["window"]
        return lambda b, h, q, kv: (q >= kv) & (q - kv < w)
    return None


def alibi_score_mod(slopes):
    """Per-head ALiBi over a captured tensor, as our spec writes it: score - slope[h] * (q - kv)."""
    return lambda score, b, h, q, kv: score - slopes[h] * (q - kv)


def main():
    cfg = json.load(sys.stdin)
    if not torch.cuda.is_available():
        print("peers need a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        sys.exit(3)
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        # Every case (shape, mask, score_mod, with or without autograd) is its own compiled graph;
        # past dynamo's default limit of 8 flex would silently run eagerly (unfused, N×N).
        import torch._dynamo as dynamo  # (a plain `import torch._dynamo` here would make torch local)

        for name, at_least in (("recompile_limit", 256), ("cache_size_limit", 256),
                               ("accumulated_recompile_limit", 1024), ("accumulated_cache_size_limit", 1024)):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, max(getattr(dynamo.config, name), at_least))
        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as e:  # noqa: BLE001 - report and go on with SDPA alone
        flex = None
        flex_error = str(e)
    backward = cfg.get("backward", False)
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
            if backward:
                sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
                backward_peer("sdpa", sdpa, sets, [], cfg, common)
        mm = mask_mod_for(c["peer"])
        from_layout = kind == "block-layout"
        if mm is None and not from_layout:
            continue
        if flex is None:
            emit(peer="flex", status="unsupported", message=flex_error[:300], **common)
            if backward:
                emit(peer="flex", mode="backward", status="unsupported", message=flex_error[:300], **common)
            continue
        slopes = None
        if kind == "causal-alibi":
            slopes = torch.tensor(c["peer"]["slopes"], dtype=torch.float32, device="cuda")
        block_mask = None
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
            if slopes is None:
                fn = lambda i: flex(*sets[i % 2], block_mask=block_mask, enable_gqa=gqa)
            else:
                score_mod = alibi_score_mod(slopes)
                fn = lambda i: flex(*sets[i % 2], score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)
            m, p10, p90 = time_ms(fn, cfg["warmup"], cfg["repeat"])
            emit(peer="flex", status="ok", ms=m, p10=p10, p90=p90, maskBuildMs=build_ms, **common)
        except Exception as e:  # noqa: BLE001
            emit(peer="flex", status="failed", message=str(e)[:300], **common)
        if not backward:
            continue
        if block_mask is None:
            emit(peer="flex", mode="backward", status="failed", message="no block mask (see the forward)", **common)
        elif slopes is None:
            attend = lambda q, k, v: flex(q, k, v, block_mask=block_mask, enable_gqa=gqa)
            backward_peer("flex", attend, sets, [], cfg, common)
        else:
            # The slopes are a leaf with requires_grad; one score_mod per leaf, so compiled graphs are reused.
            mods = {}

            def attend(q, k, v, s, mods=mods, block_mask=block_mask, gqa=gqa):
                if id(s) not in mods:
                    mods[id(s)] = alibi_score_mod(s)
                return flex(q, k, v, score_mod=mods[id(s)], block_mask=block_mask, enable_gqa=gqa)

            backward_peer("flex", attend, sets, [slopes], cfg, common)


if __name__ == "__main__":
    main()
