"""Stage 1's settings (`radis-mlx generate`): every one checked before any data or model is read."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from .. import __version__, bounds, methods, prompts
from ..fileio import UserError
from ..settings import MODEL_HELP, setting
from ..tcot import target_tag


@dataclass
class GenerateConfig:
    data: str = setting(help="ALMA JSON/JSONL, WMT source file or dir, JSONL (src/ref/src_lang/tgt_lang), "
                        "instruction file (replay), or a HF dataset id")
    out: str = setting(help="output JSONL (resumes if it exists)")
    mode: str = setting(methods.DEFAULT_MODE, "what to generate (radis-mlx methods)", choices=tuple(methods.MODES))
    model: str | None = setting(None, MODEL_HELP)
    teacher: str | None = setting(None, "generate with this model instead (the paper's teacher ablation)")
    pairs: str | None = setting(None, "directions, e.g. de-en,en-de")
    ref: str | None = setting(None, "reference file, when --data is a plain-text source file")
    split: str = setting("train", "split for ALMA dirs / HF datasets")
    limit: int | None = setting(None, "sample N rows (reproducible with --seed)")
    seed: int = setting(0, "seed of the sampling (--limit, --temperature, --ratio)")
    max_tokens: int = setting(256, "max new tokens per row")
    temperature: float = setting(0.0, "0 = greedy (deterministic)")
    top_p: float = setting(1.0, "nucleus sampling's probability mass (1: off)")
    batch_size: int = setting(64, "sequences decoded together")
    workers: int = setting(0, "local processes sharing the rows (CPU); 0: one per core when there are 64+ rows "
                           "and memory for a model each")
    translate_template: str = setting(prompts.TRANSLATE, "translation instruction template ({src_name}, "
                                      "{tgt_name}, {src})", text=True)
    explain_template: str = setting(prompts.EXPLAIN, "explain-mode user prompt ({instruction}, {ref})", text=True)
    system: str | None = setting(None, "system prompt", text=True)
    thinking: bool = setting(False, "leave thinking on for thinking-capable templates")
    # Quality controls: a rejected row keeps the reference-only target and records why.
    min_tokens: int = setting(1, "reject shorter outputs (tokens)")
    max_len: int | None = setting(None, "reject outputs longer than this many tokens")
    max_repeat: float = setting(0.5, "reject when this share of 4-grams repeat (degenerate loops)")
    unfinished: str = setting("trim", "outputs that hit --max-tokens: keep, trim (to the last sentence end) or "
                              "drop", choices=("keep", "trim", "drop"))
    ratio: float = setting(1.0, "keep rationales for this seeded fraction of rows")
    dtype: str = setting("auto", "weights' dtype (auto: float32 on CPU)", choices=bounds.LOAD_DTYPES)
    trust_remote_code: bool = setting(False, "run the model repository's own code (off unless given)")
    tcot_lang: str = setting("de", "--mode tcot: the target language")
    translator: str | None = setting(None, "--mode tcot: MODEL[,adapter=DIR] that translates (default: the "
                                     "model itself)")
    answers: str | None = setting(None, "--mode tcot: the replay file its English answers go to (default: "
                                  "OUT.answers.jsonl)")
    auto_probe_rows: int = setting(16, "--mode rationale-auto: try continuation on this many first rows")
    # Qwen2.5 gave 11 of 200 rows a rationale by continuation, none an explanation.
    auto_min_yield: float = setting(0.5, "--mode rationale-auto: keep continuation when this share of the probe "
                                    "rows gets a rationale (kept, AUTO_MIN_TOKENS tokens or more)")

    OLD_NAMES = {"template": "translate_template"}  # old key -> setting (accepted with a note)

    def fingerprint(self) -> dict:
        """Settings that change what a row contains; a rerun must match them to resume."""
        skip = {"out", "limit", "batch_size", "workers", "trust_remote_code", "answers"}
        # A mode's own settings count for its rows only (and older outputs lack them).
        mine = set(methods.get_mode(self.mode).own_settings)
        skip |= {k for m in methods.MODES.values() for k in m.own_settings} - mine
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["version"] = __version__
        return d

    def validate(self) -> "GenerateConfig":
        """Check the settings before any data or model is read (a recipe checks every stage first)."""
        methods.get_mode(self.mode, "mode")
        bounds.new_tokens(self)
        bounds.sampling(self)
        bounds.batch(self)
        bounds.seed(self)
        bounds.limit(self)
        bounds.dtype(self)
        bounds.directions(self)
        bounds.int_in(self, "workers", 0, bounds.MAX_WORKERS)
        bounds.int_in(self, "min_tokens", 0, bounds.MAX_NEW_TOKENS)
        bounds.int_in(self, "max_len", 1, bounds.MAX_NEW_TOKENS, optional=True)
        bounds.float_in(self, "max_repeat", 0.0, 1.0)
        bounds.float_in(self, "ratio", 0.0, 1.0)
        if self.ref is not None and not Path(str(self.ref)).is_file():  # a data source: --check sees it too
            raise UserError(f"ref: {self.ref}: file not found (the reference file of a plain-text --data)")
        if self.unfinished not in ("keep", "trim", "drop"):
            raise UserError(f"unfinished: unknown value {self.unfinished!r} (keep, trim, drop)")
        bounds.int_in(self, "auto_probe_rows", 1, 1 << 20)
        bounds.float_in(self, "auto_min_yield", 0.0, 1.0)
        target_tag(self.tcot_lang)
        return self
