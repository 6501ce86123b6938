"""A GGUF file's tokenizer as a Hugging Face fast tokenizer: byte-level BPE rebuilt from the vocabulary,
merges, token types, pre-tokenizer name and chat template in its metadata (what llama.cpp's converter
wrote from the original tokenizer.json). SentencePiece vocabularies are refused by name."""

from __future__ import annotations

from ..fileio import UserError

# llama.cpp's pre-tokenizer names -> the split regex HF uses (None: GPT-2's, built into ByteLevel).
LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {"gpt2": "gpt2", "default": "gpt2", "smollm": "digits+gpt2",
                   "starcoder": "digits+gpt2", "llama-bpe": LLAMA3_RE, "llama3": LLAMA3_RE,
                   "qwen2": QWEN2_RE}



def build_tokenizer(meta: dict, path="GGUF"):
    """Rebuild a HF fast tokenizer (tokenizer.json) from the GGUF vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, Regex

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        what = "SentencePiece" if kind == "llama" else repr(kind)
        raise UserError(f"{path}: unsupported GGUF tokenizer model {what} (supported: gpt2 byte-level BPE);"
                        " convert from the original Hugging Face repository instead")
    pre = meta.get("tokenizer.ggml.pre", "default")
    split = _PRE_TOKENIZERS.get(pre)
    if split is None:
        raise UserError(f"{path}: unsupported GGUF pre-tokenizer {pre!r} (supported: {', '.join(_PRE_TOKENIZERS)})")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    if split == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control (3) and user-defined (4) tokens must never be split by BPE; only control tokens are
    # special (add_special_tokens would mark user-defined ones special too, whatever AddedToken says).
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == 4])
    ids = {k: int(meta[f"tokenizer.ggml.{k}"]) for k in
           ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")
           if f"tokenizer.ggml.{k}" in meta}
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    if add_bos and "bos_token_id" in ids:
        bos = tokens[ids["bos_token_id"]]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, ids["bos_token_id"])])
    arch = meta.get("general.architecture")
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": add_bos,
        "model_max_length": int(meta.get(f"{arch}.context_length", 4096)),
    }
    for key, name in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token"),
                      ("padding_token_id", "pad_token"), ("unknown_token_id", "unk_token")):
        if key in ids:
            tok_config[name] = tokens[ids[key]]
    template = meta.get("tokenizer.chat_template")
    if template:
        tok_config["chat_template"] = template
    return tok, tok_config
