"""Self-retention's NLL against a hand computation on the tiny model (evals/retention.py)."""

from __future__ import annotations

import pytest

from radis_mlx import prompts
from radis_mlx.evals import retention


# ------------------------------------------------------------------ retention NLL

def test_retention_nll_equals_hand_computed(tiny_model_dir):
    import mlx.core as mx
    import numpy as np
    from radis_mlx.models import load

    L = load(str(tiny_model_dir))
    tok = L.tokenizer
    seqs = [retention.answer_ids(tok, prompts.chat(tok, "Say hi"), "The dog is sleeping.", True),
            retention.answer_ids(tok, prompts.chat(tok, "Translate"), "Die Katze trinkt Milch. The cat drinks milk.",
                               False)]
    assert seqs[0][0][-1] == tok.convert_tokens_to_ids("<|im_end|>")  # a finished answer ends its turn
    got = retention.sequence_nll(L.model, seqs, max_batch_tokens=10_000)  # one right-padded batch
    one_by_one = retention.sequence_nll(L.model, seqs, max_batch_tokens=1)
    for (ids, n_p), (s, n), (s1, _) in zip(seqs, got, one_by_one):
        logits = np.array(L.model(mx.array([ids]))[0].astype(mx.float32), dtype=np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        want = -sum(logp[t - 1, ids[t]] for t in range(n_p, len(ids)))
        assert n == len(ids) - n_p
        assert s == pytest.approx(want, rel=1e-4) and s1 == pytest.approx(want, rel=1e-4)
    assert retention.mean_nll(got) == pytest.approx((got[0][0] + got[1][0]) / (got[0][1] + got[1][1]))
