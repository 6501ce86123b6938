"""Export a model with its adapters fused as one GGUF file for llama.cpp, Ollama and LM Studio.

The inverse of gguf.py, written with llama.cpp's own Python package: ``gguf.TensorNameMap`` names the
tensors, ``gguf.quants.quantize`` makes Q8_0, ``gguf.BpeVocab``/``gguf.SpecialVocab`` read the
tokenizer files (merges, special ids, add_bos, chat template) as llama.cpp's converter does, and
``GGUFWriter`` writes the file. mlx-lm's own exporter (mlx_lm.gguf) is not used: it writes every
tokenizer as SentencePiece ("llama"), with no merges, pre-tokenizer or chat template, F16 only and
llama only; its q/k row permutation is reused. Tensors are converted and written one at a time, and
the file is written under a temporary name and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..fileio import UserError
from ..prompts import end_of_turn
from . import loader
from .fuse import fuse_adapters
from .modelfile import write_modelfile
from .gguf import ARCHS as GGUF_ARCHS
from .tokenizer import LLAMA3_RE, QWEN2_RE

# mlx-lm model_type -> (llama.cpp architecture, q/k rows permuted as llama.cpp's llama converter does)
ARCHS = {a.model_type: (name, a.permute_qk) for name, a in GGUF_ARCHS.items() if a.exports}
TYPES = ("f16", "q8_0")


def _types(kind: str):
    from gguf import GGMLQuantizationType as Q, LlamaFileType as F

    return {"f16": (Q.F16, F.MOSTLY_F16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}[kind]


def check_output(out, overwrite: bool = False) -> Path:
    """Refuse an output path before any model is loaded."""
    out = Path(out)
    if out.is_file() and not overwrite:
        raise UserError(f"{out}: exists (pass --overwrite to replace it)")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"{out}: the output's directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{out}: the output's directory {parent} is not writable")
    if out.is_dir():
        raise UserError(f"{out}: is a directory (give the .gguf file to write)")
    return out


def gguf_arch(config: dict) -> tuple[str, bool]:
    model_type = config.get("model_type")
    if model_type not in ARCHS:
        raise UserError(f"export --gguf: unsupported architecture {model_type!r} "
                        f"(supported: {', '.join(ARCHS)})")
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default", "linear"):
        raise UserError(f"export --gguf: {model_type} with rope scaling {kind!r} is not supported (linear only)")
    return ARCHS[model_type]


def check_exportable(model: str | None) -> None:
    """Refuse an architecture or tokenizer llama.cpp cannot take here, from the model's config.json
    and tokenizer.json alone, before its weights are loaded."""
    path = loader.resolve(model, "float32")
    gguf_arch(json.loads(_model_file(path, "config.json").read_text()))
    tok = _model_file(path, "tokenizer.json")
    tok_json = json.loads(tok.read_text(encoding="utf-8")) if tok.is_file() else {}
    if (tok_json.get("model") or {}).get("type") != "BPE":
        raise UserError(f"export --gguf: unsupported tokenizer in {path} (gpt2 byte-level BPE only, from a "
                        "tokenizer.json)")
    _pre_tokenizer(tok_json)


def _model_file(path: str, name: str) -> Path:
    """One file of a local model dir, or of a hub repo (from the cache, or fetched alone)."""
    if Path(path).is_dir():
        return Path(path) / name
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(path, name))
    except EntryNotFoundError:
        return Path(path) / name  # absent: refused as such by the caller
    except (LocalEntryNotFoundError, HfHubHTTPError) as e:
        raise UserError(f"export --gguf: cannot read {name} of {path} ({type(e).__name__})") from None


# ------------------------------------------------------------------ tokenizer
def _pre_tokenizer(tokenizer_json: dict) -> str:
    """llama.cpp's name for the split a byte-level BPE applies before merging (tokenizer.py's
    _PRE_TOKENIZERS, read backwards). llama.cpp's converter identifies it by hashing the
    tokenization of a test text; the structure is compared here instead, as the importer builds it."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = steps[0].get("pattern", {}).get("Regex")
        for name, regex in (("llama-bpe", LLAMA3_RE), ("qwen2", QWEN2_RE)):
            if pattern == regex:
                return name
    raise UserError(f"export --gguf: the tokenizer's pre-tokenizer ({'+'.join(map(str, kinds))}) is not one "
                    "llama.cpp names here (gpt2, smollm, llama-bpe, qwen2)")


def model_files(path: str) -> Path:
    """The directory holding the model's tokenizer files (a hub id's local snapshot)."""
    from mlx_lm.utils import hf_repo_to_path

    return Path(path) if Path(path).is_dir() else hf_repo_to_path(path)


def vocab_metadata(model_dir: Path, tokenizer, n_vocab: int):
    """(tokens, token types, pre-tokenizer name, gguf.SpecialVocab) as llama.cpp's converter writes
    them for a gpt2 BPE model, read from the model's own tokenizer files as it reads them (a
    tokenizer saved again by transformers gains defaults, e.g. an unk token Qwen has none of): added
    tokens CONTROL when special, USER_DEFINED otherwise; embedding rows beyond the vocabulary UNUSED
    [PADn] tokens."""
    from gguf import BpeVocab, SpecialVocab, TokenType

    try:
        tok_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        vocab = BpeVocab(model_dir)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"export --gguf: unsupported tokenizer in {model_dir} (gpt2 byte-level BPE only: "
                        f"{type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    special = SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t, _, _ in vocab.all_tokens()]
    if len(tokens) > n_vocab:
        raise UserError(f"export --gguf: the tokenizer has {len(tokens)} tokens, the embedding only {n_vocab} rows")
    types = [int(TokenType.NORMAL)] * len(tokens)
    for added in tok_json.get("added_tokens", []):
        if added["id"] < len(tokens):
            types[added["id"]] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [int(TokenType.UNUSED)] * (n_vocab - len(types))
    # A model imported from GGUF carries llama.cpp's padding as vocabulary entries; that name at that
    # id is llama.cpp's own and marks it unused again.
    types = [int(TokenType.UNUSED) if t == f"[PAD{i}]" else k for i, (t, k) in enumerate(zip(tokens, types))]
    bos = special.special_token_ids.get("bos")
    if bos is not None and "bos" not in special.add_special_token:
        special.add_special_token["bos"] = tokenizer.encode("a")[:1] == [bos]  # what the tokenizer does
    return tokens, types, _pre_tokenizer(tok_json), special


# ------------------------------------------------------------------ weights
def tensor_plan(weights: dict, config: dict, arch: str, kind: str) -> list[tuple]:
    """[(GGUF name, HF name, GGML type, shape)] in llama.cpp's naming and types: 1-D tensors F32;
    matrices F16 or Q8_0 (F16 where a row does not split into Q8_0 blocks, as llama.cpp does)."""
    import gguf

    names = gguf.TensorNameMap(gguf.MODEL_ARCH[arch.upper()], int(config["num_hidden_layers"]))
    qtype, _ = _types(kind)
    plan = []
    for hf, w in weights.items():
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"export --gguf: {arch} has no GGUF tensor for {hf!r}")
        t = gguf.GGMLQuantizationType.F32 if w.ndim == 1 else qtype
        if t == gguf.GGMLQuantizationType.Q8_0 and w.shape[-1] % gguf.GGML_QUANT_SIZES[t][0]:
            t = gguf.GGMLQuantizationType.F16
        plan.append((name, hf, t, tuple(int(d) for d in w.shape)))
    return plan


def tensor_data(hf: str, w, config: dict, permute: bool, qtype):
    """One tensor as the bytes GGUF stores: llama's q/k rows in llama.cpp's rotary order, then cast
    or quantized."""
    import mlx.core as mx
    import numpy as np
    from gguf.quants import quantize
    from mlx_lm.gguf import permute_weights

    heads = int(config["num_attention_heads"])
    if permute and ".self_attn.q_proj." in hf:
        w = permute_weights(w, heads)
    elif permute and ".self_attn.k_proj." in hf:
        w = permute_weights(w, heads, int(config.get("num_key_value_heads", heads)))
    return quantize(np.asarray(w.astype(mx.float32)), qtype)


# ------------------------------------------------------------------ the file
def add_hyperparameters(w, config: dict, arch: str, n_vocab: int) -> None:
    from gguf import RopeScalingType

    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    w.add_context_length(int(config.get("max_position_embeddings", 4096)))
    w.add_embedding_length(hidden)
    w.add_block_count(int(config["num_hidden_layers"]))
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_head_count(heads)
    w.add_head_count_kv(int(config.get("num_key_value_heads", heads)))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    w.add_vocab_size(n_vocab)
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(scaling["factor"]))


def add_tokenizer(w, vocab) -> None:
    tokens, types, pre, special = vocab
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    special.add_to_gguf(w, quiet=True)


def write_gguf(out: Path, config: dict, weights: dict, vocab, kind: str, name: str) -> Path:
    """Write the GGUF under a temporary name beside ``out``, tensor by tensor, then rename it."""
    import math

    import numpy as np
    from gguf import GGML_QUANT_VERSION, GGUFWriter
    from gguf.quants import quant_shape_to_byte_shape

    arch, permute = gguf_arch(config)
    plan = tensor_plan(weights, config, arch, kind)
    n_vocab = int(weights["model.embed_tokens.weight"].shape[0])
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        w = GGUFWriter(tmp, arch)
        w.add_type("model")
        w.add_name(name)
        w.add_file_type(_types(kind)[1])
        w.add_quantization_version(GGML_QUANT_VERSION)
        add_hyperparameters(w, config, arch, n_vocab)
        add_tokenizer(w, vocab)
        for gname, _, qtype, shape in plan:
            # Declared up front so the data can follow one tensor at a time. With raw_dtype set and a
            # non-uint8 dtype, the writer takes ``shape`` as the logical shape.
            nbytes = math.prod(quant_shape_to_byte_shape(shape, qtype))
            w.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for _, hf, qtype, _ in plan:  # one tensor's float32 copy at a time
            w.write_tensor_data(tensor_data(hf, weights[hf], config, permute, qtype))
        w.close()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from a llama.cpp server's user
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export_gguf(model: str | None = None, adapter: str | None = None, out="model.gguf", type: str = "f16", *,
                overwrite: bool = False, stops=None) -> Path:
    """Load ``model`` (+ ``adapter``), fuse the adapters into the weights and write ``out`` as a GGUF
    of ``type`` (f16 or q8_0) with the tokenizer and chat template, and a ``Modelfile`` beside it that
    stops at ``stops(tokenizer)`` (default: the end of turn); returns the GGUF's path."""
    from mlx.utils import tree_flatten

    if type not in TYPES:
        raise UserError(f"--type {type}: choose {' or '.join(TYPES)}")
    out = check_output(out, overwrite)
    check_exportable(model)  # from two small files: a 7B is ~28 GB in float32 before a refusal
    # float32: the fused weights are exact before the one rounding to F16/Q8_0.
    loaded = loader.load(model, adapter, dtype="float32")
    config = dict(loaded.config)
    gguf_arch(config)
    fuse_adapters(loaded.model, dequantize=True)
    weights = dict(tree_flatten(loaded.model.parameters()))
    vocab = vocab_metadata(model_files(loaded.path), loaded.tokenizer,
                           int(weights["model.embed_tokens.weight"].shape[0]))
    source = (config.get("source") or {}).get("name") or Path(loaded.name).name.removesuffix(".gguf")
    name = f"{source} + {Path(adapter).name}" if adapter else source
    written = write_gguf(out, config, weights, vocab, type, name)
    write_modelfile(written, loaded.tokenizer, stops(loaded.tokenizer) if stops else [end_of_turn(loaded.tokenizer)])
    return written
