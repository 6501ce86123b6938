"""Adapter interpolation: base + A x the LoRA delta, on the tiny built model (models/interpolate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radis_mlx.cli import main
from radis_mlx.fileio import UserError
from radis_mlx.models import load

from conftest import make_adapter


def logits(loaded, text: str = "Der Hund schläft im Garten."):
    import mlx.core as mx
    import numpy as np
    ids = loaded.tokenizer.encode(text)
    return np.array(loaded.model(mx.array([ids])).astype(mx.float32))


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("interp") / "lora")


def fused_with(model_dir: Path, adapter: Path, share: float):
    """The base with ``share`` x the LoRA delta folded into its weights, computed here from the files."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    base = load(str(model_dir))
    conf = json.loads((adapter / "adapter_config.json").read_text())
    s = conf["lora_parameters"]["scale"]
    w = mx.load(str(adapter / "adapters.safetensors"))
    params = dict(tree_flatten(base.model.parameters()))
    new = []
    for k in [k for k in w if k.endswith(".lora_a")]:
        layer = k[: -len(".lora_a")]
        delta = s * (w[f"{layer}.lora_b"].T @ w[k].T)
        new.append((f"{layer}.weight", params[f"{layer}.weight"] + share * delta))
    assert new
    base.model.load_weights(new, strict=False)
    return base


def test_scale_0_is_the_base_1_the_adapter_and_half_the_fused_half_delta(tiny_model_dir, adapter):
    import numpy as np
    base = logits(load(str(tiny_model_dir)))
    trained = logits(load(str(tiny_model_dir), str(adapter)))
    assert np.abs(trained - base).max() > 1e-2  # the adapter changes the model: the checks below mean something
    assert np.array_equal(logits(load(str(tiny_model_dir), str(adapter), adapter_scale=0.0)), base)
    assert np.array_equal(logits(load(str(tiny_model_dir), str(adapter), adapter_scale=1.0)), trained)
    half = logits(load(str(tiny_model_dir), str(adapter), adapter_scale=0.5))
    np.testing.assert_allclose(half, logits(fused_with(tiny_model_dir, adapter, 0.5)), atol=1e-4)
    assert np.abs(half - base).max() > 1e-3 and np.abs(half - trained).max() > 1e-3


def test_eval_adapter_scale_runs_are_named_and_scale_0_answers_as_the_base(tmp_path, tiny_model_dir, adapter):
    from handmade import write_data
    data = write_data(tmp_path / "data")
    common = ["--suites", "advbench", "--test-data", f"advbench={data['advbench']}", "--max-tokens", "6",
              "--out", str(tmp_path / "ev")]
    main(["eval", "--model", str(tiny_model_dir), "--name", "base", *common])
    main(["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--adapter-scale", "0", *common])
    main(["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), *common])
    read = lambda run: [json.loads(l)["response"] for l in (tmp_path / "ev" / run / "advbench.jsonl").open()]  # noqa
    assert read(f"{adapter.parent.name}-lora@0") == read("base")
    assert read(f"{adapter.parent.name}-lora") != read("base")
    res = json.loads((tmp_path / "ev" / f"{adapter.parent.name}-lora@0" / "results.json").read_text())
    assert res["adapter_scale"] == 0 and res["model_key"] != json.loads(
        (tmp_path / "ev" / f"{adapter.parent.name}-lora" / "results.json").read_text())["model_key"]


def test_scale_refuses_dora_full_and_no_adapter_in_one_line(tmp_path, tiny_model_dir):
    dora = make_adapter(tiny_model_dir, tmp_path / "dora", fine_tune_type="dora")
    with pytest.raises(UserError, match="LoRA adapters only, these are dora"):
        load(str(tiny_model_dir), str(dora), adapter_scale=0.5)
    load(str(tiny_model_dir), str(dora))  # as trained it still loads
    with pytest.raises(UserError, match="needs an adapter"):
        load(str(tiny_model_dir), None, adapter_scale=0.5)
    with pytest.raises(UserError, match="finite number"):
        load(str(tiny_model_dir), str(dora), adapter_scale=float("nan"))
