"""decode(): the batched path (shared prefix, grouped prefill, waves, zombies, padding-skipping
attention) must pick exactly the tokens a plain per-row greedy loop picks."""

from __future__ import annotations

import pytest


def _per_row_greedy(model, prompt, n):
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    return [int(t) for (t, _), _ in zip(generate_step(mx.array(prompt), model, max_tokens=n), range(n))]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from radis_mlx.models import load
    return load(str(tiny_model_dir))


@pytest.mark.parametrize("fast_exp", [True, False])
def test_batched_decoding_equals_the_per_row_loop(tiny, fast_exp):
    from radis_mlx.runtime.decode import DecodeConfig, decode

    model, tok = tiny.model, tiny.tokenizer
    prefix = [1, 40, 41, 42, 43, 44]  # shared by all: computed once
    # 20 rows of 1 to 96 own tokens: more rows than the batch (waves), and left padding of 32+
    # positions in the decoding batch (the attention skips it in row chunks).
    prompts = [prefix + [(7 * i + j) % 300 + 3 for j in range(1 + (i * 37) % 96)] for i in range(20)]
    n = 12
    want = [_per_row_greedy(model, p, n) for p in prompts]
    # An end-of-turn token that some rows produce part-way: they stop there (and stay in the batch
    # as zombies while the rest go on).
    counts: dict[int, int] = {}
    for w in want:
        for t in set(w[1:-1]):
            counts[t] = counts.get(t, 0) + 1
    eos = max(counts, key=lambda t: (0 < counts[t] < len(prompts) // 2, counts[t]))
    saved = tok.eos_token_ids
    tok.eos_token_ids = {eos}
    try:
        got = decode(model, tok, prompts, DecodeConfig(max_tokens=n, batch_size=16, fast_exp=fast_exp))
    finally:
        tok.eos_token_ids = saved
    stopped = 0
    for w, c in zip(want, got):
        if eos in w:
            stopped += 1
            assert (c.tokens, c.finish) == (w[:w.index(eos)], "stop")
        else:
            assert (c.tokens, c.finish) == (w, "length")
    assert 0 < stopped < len(prompts)


def test_per_row_token_limits_and_a_prompt_that_is_all_prefix(tiny):
    """eval passes a limit per row; a prompt of the shared prefix plus one token has nothing of its
    own to prefill."""
    from radis_mlx.runtime.decode import DecodeConfig, decode

    model, tok = tiny.model, tiny.tokenizer
    prompts = [[1, 40, 41, 42, 50], [1, 40, 41, 42, 50, 60, 61], [1, 40, 41, 42, 50, 70]]
    limits = [3, 7, 5]
    saved = tok.eos_token_ids
    tok.eos_token_ids = {399}  # not produced: every row runs to its own limit
    try:
        got = decode(model, tok, prompts, DecodeConfig(max_tokens=9, batch_size=8), max_tokens=limits)
    finally:
        tok.eos_token_ids = saved
    assert [c.tokens for c in got] == [_per_row_greedy(model, p, m) for p, m in zip(prompts, limits)]
    assert [c.finish for c in got] == ["length"] * 3


def test_prefill_groups_bound_padding_and_tokens():
    from radis_mlx.runtime.decode import _groups

    lengths = [3, 4, 4, 5, 30, 31, 32, 33, 34, 300]
    groups = _groups(lengths, budget=100)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert g == list(range(g[0], g[-1] + 1))
        assert len(g) * longest <= max(100, longest)
        assert sum(longest - lengths[i] for i in g) * 8 <= len(g) * longest
    assert [300] in [[lengths[i] for i in g] for g in groups]  # the outlier pads nobody


def test_attention_skips_left_padding_exactly():
    """One decoding step against a left-padded batch cache: the pow-based attention that reads each
    row chunk from its first unpadded position equals MLX's attention over the whole padded cache."""
    from types import SimpleNamespace

    import mlx.core as mx
    from mlx_lm.models.base import create_causal_mask

    from radis_mlx.runtime.kernels import _fast_fns, _skip_left_padding

    mx.random.seed(1)
    b, h, kv, t, d = 24, 6, 2, 150, 16
    pads = [min(140, (i * 53) % 149) for i in range(b)]
    q = mx.random.normal((b, h, 1, d))
    k, v = mx.random.normal((b, kv, t, d)), mx.random.normal((b, kv, t, d))
    mask = create_causal_mask(1, offset=t - 1, left_padding=mx.array(pads))
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)
    attend = _fast_fns()[3]
    got = _skip_left_padding(attend, q, k, v, 0.25, mask, SimpleNamespace(left_padding=mx.array(pads)))
    assert got.shape == ref.shape and mx.allclose(got, ref, atol=1e-5).item()
    # Garbage in the padding must not matter: that is what makes skipping it exact.
    k2 = mx.where(mx.arange(t)[None, None, :, None] < mx.array(pads)[:, None, None, None], 1e4, k)
    got2 = _skip_left_padding(attend, q, k2, v, 0.25, mask, SimpleNamespace(left_padding=mx.array(pads)))
    assert mx.allclose(got2, ref, atol=1e-5).item()


def test_inference_kernels_match_mlx():
    """The multiply-only exp behind decoding's SiLU and attention: SiLU to 1e-5, attention over
    a KV cache (a prefill chunk after earlier positions, causal) to 1e-5 of MLX's own."""
    import mlx.core as mx
    from mlx_lm.models.activations import swiglu

    from radis_mlx.runtime.kernels import _fast_fns

    _, _, _, attend, swiglu_infer = _fast_fns()
    gate = mx.concatenate([mx.linspace(-60, 60, 20001), mx.array([0.0, -1e-8, 1e-8])])
    x = mx.ones_like(gate) * 1.5
    assert mx.allclose(swiglu_infer(gate, x), swiglu(gate, x), rtol=1e-5, atol=1e-6).item()
    mx.random.seed(3)
    q = mx.random.normal((2, 6, 5, 16)) * 3
    k, v = mx.random.normal((2, 2, 12, 16)) * 3, mx.random.normal((2, 2, 12, 16))
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")
    assert mx.allclose(attend(q, k, v, 0.25, "causal"), ref, atol=1e-5).item()


def test_table_rope_equals_mlx_rope_and_is_undone():
    """Decoding's rope from a table: the same float32 values as mx.fast.rope for one offset and for
    per-row offsets (mlx-lm's batch caches), with rotated dims below the head size; positions past
    the table go to mx.fast.rope; the swap is gone after restore."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.nn.layers import positional_encoding

    from radis_mlx.runtime.kernels import patch_rope

    mx.random.seed(0)
    x = mx.random.normal((4, 3, 7, 32))
    rows = mx.array([0, 5, 17, 90])
    full, part = nn.RoPE(32, base=10000.0), nn.RoPE(16, base=500.0, scale=0.5)
    cases = [(r, off) for r in (full, part) for off in (0, 11, rows, 95)]
    want = [r(x, offset=off) for r, off in cases]
    fallback = []
    mlx_rope = mx.fast.rope
    mx.fast.rope = lambda *a, **kw: fallback.append(kw["offset"]) or mlx_rope(*a, **kw)
    try:
        restore = patch_rope(100)  # what it falls back to is the counting wrapper
    finally:
        mx.fast.rope = mlx_rope
    try:
        assert positional_encoding.mx.fast.rope is not mx.fast.rope
        got = [r(x, offset=off) for r, off in cases]
    finally:
        restore()
    assert fallback == [95, 95]  # only the positions past the table (95 + 7 > 100)
    assert positional_encoding.mx is mx
    for (r, off), g, w in zip(cases, got, want):
        assert g.shape == w.shape and mx.array_equal(g, w).item(), (r, off)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2 runs a copy of its layer list (pipeline_layers)
def test_kernel_check_on_cut_layers_refuses_a_wrong_swap(tiny_model_dir, tmp_path, monkeypatch, arch):
    """The kernel swap is checked on three of the model's layers; a swap that changes the logits is
    refused, and the model keeps all its layers and its own functions either way."""
    import sys

    import mlx.core as mx
    from mlx_lm.models import activations

    from conftest import build_tiny_model
    from radis_mlx.runtime import kernels
    from radis_mlx.models import load

    model = load(str(build_tiny_model(tmp_path / "deep", layers=6, arch=arch))).model
    mod = sys.modules[type(model).__module__]
    layers = list(model.model.layers)
    seen = []  # how many layers each forward pass of the check ran
    layer_call = type(layers[0]).__call__
    monkeypatch.setattr(type(layers[0]), "__call__",
                        lambda self, *a, **kw: seen.append(id(self)) or layer_call(self, *a, **kw))
    restore = kernels.patch_cpu_kernels(model, inference=True)
    assert restore is not None and model.model.layers == layers
    assert seen and set(seen) == {id(x) for x in layers[:2] + layers[-1:]}
    restore()
    fns = kernels._fast_fns()
    monkeypatch.setattr(kernels, "_fast_fns", lambda: (*fns[:4], lambda gate, x: gate * x))
    assert kernels.patch_cpu_kernels(model, inference=True) is None
    assert model.model.layers == layers and len(model.model.layers) == 6
    assert mod.swiglu is activations.swiglu
    x = mx.array([[1, 2, 3]])
    assert model(x).shape == (1, 3, model.args.vocab_size)


def test_the_real_model_takes_the_fast_kernels(real_model_dir):
    """patch_cpu_kernels checks the model's logits with and without the swap and refuses it when
    they differ; on the default model it must accept, or decoding silently loses its speed."""
    from radis_mlx.runtime.kernels import patch_cpu_kernels
    from radis_mlx.models import load

    model = load(str(real_model_dir)).model
    restore = patch_cpu_kernels(model, inference=True)
    assert restore is not None
    restore()


def test_row_caches_merge_like_mlx_lm_with_room_to_grow():
    """Rows merge left-padded as mlx-lm's BatchKVCache.merge does, into a buffer with room for the
    tokens still to come (so decoding never regrows it), and a row with no history merges too."""
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, KVCache

    from radis_mlx.runtime.decode import _RowCache

    mx.random.seed(0)
    rows = [mx.random.normal((1, 2, n, 4)) for n in (5, 9, 1)]
    ours = _RowCache(room=7).merge([_RowCache(r, r * 2, room=7) for r in rows] + [_RowCache(room=7)])
    plain = []
    for r in rows:
        c = KVCache()
        c.update_and_fetch(r, r * 2)
        plain.append(c)
    plain.append(KVCache())
    ref = BatchKVCache.merge(plain)
    assert ours.keys.shape == (4, 2, 9 + 7, 4) and ours._idx == ref._idx == 9
    assert mx.array_equal(ours.keys[..., :9, :], ref.keys[..., :9, :]).item()
    assert mx.array_equal(ours.values[..., :9, :], ref.values[..., :9, :]).item()
    assert ours.left_padding.tolist() == ref.left_padding.tolist() == [4, 0, 8, 9]
    assert ours.offset.tolist() == ref.offset.tolist()


def test_sampling_is_seeded_and_samples(tiny):
    """temperature/top-p decoding (the pow-based logsumexp path): the same seed gives the same rows,
    another seed other rows, and greedy differs."""
    from radis_mlx.runtime.decode import DecodeConfig, decode

    model, tok = tiny.model, tiny.tokenizer
    prompts = [[1, 40, 41] + [(5 * i + j) % 300 + 3 for j in range(3 + 4 * i)] for i in range(6)]

    def run(**kw):
        return [c.tokens for c in decode(model, tok, prompts, DecodeConfig(max_tokens=10, batch_size=4, **kw))]
    a, b = run(temperature=1.0, top_p=0.95, seed=3), run(temperature=1.0, top_p=0.95, seed=3)
    assert a == b and all(len(t) <= 10 for t in a)
    assert run(temperature=1.0, top_p=0.95, seed=4) != a and run() != a


def test_a_row_stops_at_its_cut_even_when_the_stop_spans_tokens(tiny):
    """A stop string that two tokens make up still stops the row: its text is cut there, its tokens
    end one or two past the cut (counted in past_cut), and a row without a cut runs on untouched."""
    from radis_mlx.cuts import StringCut
    from radis_mlx.runtime.decode import DecodeConfig, decode

    model, tok = tiny.model, tiny.tokenizer
    prompts = [[1, 40, 41, 42, 50 + i] for i in range(6)]
    saved = tok.eos_token_ids
    tok.eos_token_ids = {399}  # not produced: without a cut every row runs to the limit
    try:
        free = decode(model, tok, prompts, DecodeConfig(max_tokens=24, batch_size=4))
        # In each row, a stop made of the last character of one token and the first of the next.
        stops, where = [], []
        for c in free:
            pieces = [tok.decode(c.tokens[:k]) for k in range(len(c.tokens) + 1)]
            k = next(k for k in range(3, len(c.tokens) - 2)
                     if pieces[k].strip() and len(pieces[k + 1]) > len(pieces[k]) > len(pieces[k - 1]))
            stop = pieces[k][-1] + pieces[k + 1][len(pieces[k])]
            stops.append(StringCut(stop))
            where.append(pieces[-1].find(stop, len(pieces[-1]) - len(pieces[-1].lstrip())))
        rules = stops[:5] + [None]
        got = decode(model, tok, prompts, DecodeConfig(max_tokens=24, batch_size=4), cuts=rules)
    finally:
        tok.eos_token_ids = saved
    for c, f, rule, at in zip(got, free, rules, where):
        if rule is None:
            assert (c.text, c.tokens, c.finish, c.past_cut) == (f.text, f.tokens, "length", 0)
            continue
        assert c.finish == "cut" and c.text == f.text[:at], (c.text, f.text, rule)
        assert c.tokens == f.tokens[:len(c.tokens)] and len(c.tokens) < len(f.tokens)  # nothing decoded after
        assert rule.stop in tok.decode(c.tokens) and rule.stop not in tok.decode(c.tokens[:-1])
        kept = next(k for k in range(len(c.tokens) + 1) if len(tok.decode(c.tokens[:k])) >= at)
        assert c.past_cut == len(c.tokens) - kept and 1 <= c.past_cut <= 2
