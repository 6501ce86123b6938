"""`radis-mlx run RECIPE.yaml`: generate -> finetune -> eval -> report for every method a recipe lists.

Each stage writes into the run directory and is skipped when its output is complete (generate
and eval resume row by row, finetune resumes from its last checkpoint), so re-running a killed
recipe picks up where it stopped.

Reading a recipe (YAML, --set, data paths) is ``recipe.py``; this module plans and runs it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from . import methods, preflight, report, settings, tracking, tuner
from .data import load_instructions, load_pairs, sample
from .evals import harness, suites, translate_suite
from .evals.context import ModelSpec
from .fileio import UserError, atomic_write_text, atomic_write_json, check_writable_dir, json_line, safe_join
from .generate import GenerateConfig, generate
from .generate import files as generate_files
from .generate.stage import format_summary as generate_summary
from .generate.tcot_rows import share_answers
from .outdir import check_out, claim
from .recipe import (DEMO_DATA, GENERAL_KEYS, RECIPES, _from_set, _mapping, _where, find_recipe,  # noqa: F401
                     load_recipe, only_methods, record, resolve_data, section_layers)

# ---------------------------------------------------------------- recipe -> plan

@dataclass
class Stage:
    """One step of a run: what it does (``kind``), for which method, where it writes, and its
    stage settings, built (and so checked) before any stage runs."""
    kind: str  # sample | subset | generate | finetune | eval | report
    name: str  # the recipe's method name (or the stage's own)
    out: Path
    config: object = None
    what: str = ""
    memory: object = None  # memory.Estimate of its peak (generate, finetune, eval), set by preflight.check_memory

    def status(self) -> str:
        return STATUS[self.kind](self)


_layers = section_layers


def _pick_mode(recipe: dict, name: str, spec: dict, method: methods.Method) -> str:
    """The mode a method generates: its own setting, else the recipe's when the method can make
    it, else the method's default (the registry's first)."""
    own = (spec.get("generate") or {}).get("mode")
    if own is not None:
        if own not in method.generate:
            raise UserError(f"{_where(recipe, f'methods.{name}.generate.mode')}: {own!r} is not a mode "
                            f"{method.name} trains on (choose from {', '.join(method.generate)})")
        return own
    top = (recipe.get("generate") or {}).get("mode")
    if top is not None:
        methods.get_mode(top, _where(recipe, "generate.mode"))
    return top if top in method.generate else method.generate[0]


def _generate_stage(recipe: dict, name: str, spec: dict, method: methods.Method, out: Path) -> Stage:
    mode = _pick_mode(recipe, name, spec, method)
    top, own = recipe.get("generate") or {}, spec.get("generate") or {}
    g = {**top, **own, "mode": mode}
    data = recipe.get(method.generate_from)
    if not data:
        raise UserError(f"{recipe['_path']}: {method.generate_from} is needed for method {name}")
    gen_file = generate_files.output_for(out / "generate", g, {**top, "mode": mode})  # generate names its own files
    from_train = method.generate_from == "train_data"
    fixed = dict(data=data, out=str(gen_file), model=recipe.get("model"), seed=int(recipe.get("seed", 0)),
                 mode=mode, pairs=recipe.get("pairs") if from_train else None)
    # The mode is picked above; the recipe's limit samples the training pairs (generate's own
    # limit is for other data, e.g. replay's instructions).
    drop = ("mode", "limit") if from_train else ("mode",)
    if from_train:
        fixed["limit"] = recipe.get("limit")
    layers = [(w, {k: v for k, v in m.items() if k not in drop})
              for w, m in [*_layers(recipe, "generate", top), *_layers(recipe, f"methods.{name}.generate", own)]]
    cfg = settings.build(GenerateConfig, layers, fixed, skip=("data", "out", "mode", "model", "seed", "pairs"))
    return Stage("generate", name, gen_file, cfg, f"generate {mode}")


def _finetune_stage(recipe: dict, name: str, spec: dict, method: methods.Method, out: Path,
                    gen_file: Path | None, progress: bool) -> Stage:
    train_dir = safe_join(out, f"{name}/train")
    sources = {**recipe, methods.GENERATED: str(gen_file) if gen_file else None}
    inputs = {arg: sources.get(src) for arg, src in method.inputs.items()}
    for arg, v in inputs.items():
        if not v:
            raise UserError(f"{recipe['_path']}: {method.inputs[arg]} is needed for method {name}")
    base = dict(model=recipe.get("model"), seed=recipe.get("seed", 0), pairs=recipe.get("pairs"), quiet=not progress)
    layers = [("", base), *_layers(recipe, "finetune", recipe.get("finetune") or {}),
              *_layers(recipe, f"methods.{name}.finetune", spec.get("finetune") or {}),
              ("--yes", {"yes": True} if recipe.get("_yes") else {})]
    fixed = dict(out=str(train_dir), method=method.name, **inputs)
    cfg = settings.build(tuner.FinetuneConfig, layers, fixed, skip=("out", "method", "data", "replay_data", "mix_data",
                                                              "resume", "overwrite"))
    changed = tuner.settings_changed(train_dir, cfg)
    if changed:
        # A finished run is never retrained in place: its adapters, evals and report would
        # silently mix two settings.
        raise UserError(f"{train_dir}: trained with other settings than {recipe['_path']} gives "
                        f"method {name} now: {changed}; use another --out, or delete it to retrain")
    return Stage("finetune", name, train_dir, cfg, f"finetune {method.name}")


def _eval_stage(recipe: dict, specs: list, out: Path, progress: bool, method: str | None = None) -> Stage:
    """The eval of ``specs``; ``method``: a method whose own ``eval`` settings (e.g. TCoT decoding)
    apply on top of the recipe's, for the group of methods that share them."""
    e = recipe.get("eval") or {}
    own = (recipe["methods"].get(method) or {}).get("eval") or {} if method else {}
    layers = [*_layers(recipe, "eval", e), *(_layers(recipe, f"methods.{method}.eval", own) if own else [])]
    fixed = dict(models=specs, out=str(out / "eval"), seed=int(recipe.get("seed", 0)), progress=progress)
    cfg = settings.build(harness.EvalConfig, layers, fixed, skip=("models", "out", "progress"))
    if recipe.get("pairs") and not cfg.pairs:
        cfg.pairs = recipe["pairs"]
    try:  # suites and per-suite keys (the adapters are not there yet)
        harness.check_config(dataclasses.replace(cfg, models=[None]))
    except UserError as err:
        given = any(_from_set(recipe, f"eval.{k}") for k in e)
        raise UserError(f"{'--set eval' if given else recipe['_path'] + ': eval'}: {err}") from None
    how = "".join(f", {k}={v}" for k, v in own.items())
    return Stage("eval", "eval", out / "eval", cfg,
                 f"eval: {', '.join(s.name for s in specs)} on {', '.join(cfg.suites)}{how}")


def plan(recipe: dict, out, progress: bool = True) -> list[Stage]:
    """Every stage of a recipe, in order, with its settings built and checked; runs nothing."""
    out = Path(out)
    model, stages, specs, seen = recipe.get("model"), [], [], set()
    picked = {name: methods.get(spec.get("method", name)) for name, spec in recipe["methods"].items()}
    if recipe.get("train_data") and recipe.get("limit") and any(m.trains for m in picked.values()):
        # Sample once, so every method (and every seed) trains on the very same pairs.
        path = out / "data" / "train.jsonl"
        stages.append(Stage("sample", "data", path, dict(recipe), f"sample {recipe['limit']} pairs"))
        recipe = {**recipe, "train_data": str(path), "limit": None}
    if any(m.trains for m in picked.values()):
        recipe = _general_subsets(recipe, picked, out, progress, stages)
    for name, spec in recipe["methods"].items():
        method = picked[name]
        if not method.trains:
            specs.append(ModelSpec(model=model, name=name))
            continue
        if not recipe.get("train_data"):
            raise UserError(f"{recipe['_path']}: train_data is needed for method {name}")
        gen = _generate_stage(recipe, name, spec, method, out) if method.generate else None
        if gen and gen.out not in seen:
            seen.add(gen.out)
            stages.append(gen)
        ft = _finetune_stage(recipe, name, spec, method, out, gen.out if gen else None, progress)
        stages.append(ft)
        specs.append(ModelSpec(model=model, adapter=str(ft.out), name=name))
        specs += [ModelSpec(model=model, adapter=str(ft.out), name=f"{name}@{a:g}", scale=a)  # no new training
                  for a in spec.get("scales") or []]
    share_answers([st for st in stages if st.kind == "generate"])
    if recipe.get("translate_suites"):
        recipe = _translated_suites(recipe, out, progress, stages)
    groups: dict[str, list] = {}  # methods with the same own eval settings share one eval stage
    for s in specs:
        own = recipe["methods"][_recipe_method(s)].get("eval") or {}
        groups.setdefault(json.dumps(own, sort_keys=True), []).append(s)
    evals = [_eval_stage(recipe, g, out, progress, _recipe_method(g[0])) for g in groups.values()]
    stages += evals
    runs = [d for e in evals for d in harness.run_dirs(e.config)]
    stages.append(Stage("report", "report", out / "report", {"runs": runs, **recipe["report"]}, "report"))
    preflight.check_models(recipe, stages)
    return stages


def _recipe_method(spec) -> str:
    """The recipe's method a run belongs to: sft-s0@0.5 is sft-s0's adapter at scale 0.5."""
    return spec.name.rsplit("@", 1)[0] if spec.scale is not None else spec.name


def _translated_suites(recipe: dict, out: Path, progress: bool, stages: list) -> dict:
    """``translate_suites: {lang: de, translator: MODEL, suites: [advbench, gsm8k]}``: each suite's
    sampled items translated once (a stage of its own), and the eval reads the translation."""
    t = _mapping(recipe["translate_suites"], _where(recipe, "translate_suites"))
    base = _eval_stage(recipe, [], out, progress).config
    lang = t.get("lang", "de")
    test_data = dict(recipe["eval"].get("test_data") or {})
    for suite in t.get("suites") or []:
        cfg = translate_suite.TranslateSuiteConfig(
            suite=suite, lang=lang, translator=t.get("translator", recipe.get("model")),
            test_data=dict(base.test_data),  # resolved (and fetched) when it runs
            limit=base.limits.get(suite, base.limit), seed=base.seed, out=str(out / "data"), progress=progress)
        path = out / "data" / f"{suite}.{lang}.jsonl"
        stages.append(Stage("translate", suite, path, cfg, f"translate {suite} into {lang}"))
        test_data[suite] = str(path)
    return {**recipe, "eval": {**recipe["eval"], "test_data": test_data}}


def _uses(method: methods.Method, key: str) -> bool:
    return method.generate_from == key or key in method.inputs.values()


def _eval_instruction_ids(recipe: dict, out: Path, progress: bool) -> dict[str, str]:
    """Every eval item a model could be trained on (id -> text), as the eval stage will sample them:
    the retention test's instructions and the other instruction suites' (a translated suite keeps
    its items' ids, so it is covered by its English source)."""
    cfg = _eval_stage(recipe, [], out, progress).config
    ids = {}
    for suite in (s for s in cfg.suites if s != "translation"):
        for r in suites.load_inputs(cfg, suite):
            if isinstance(r, dict) and "id" in r:  # instruction rows (IFEval's prompts are their own kind)
                ids[str(r["id"])] = r.get("instruction") or ""
    return ids


def check_disjoint(path, held_out: dict[str, str], where: str) -> None:
    """Instructions a method trains on must not be eval items: the retention NLL would measure
    memory of the training data, not forgetting, and a suite would test what was trained on."""
    both = [r for r in load_instructions(path) if r["id"] in held_out]
    if both:
        raise UserError(f"{where}: {path} holds {len(both)} instruction(s) of the eval suites (first: id "
                        f"{both[0]['id']}, {both[0]['instruction'][:60]!r}); give `limit` to sample a disjoint "
                        "subset, or another file")


def _general_subsets(recipe: dict, picked: dict, out: Path, progress: bool, stages: list) -> dict:
    """Replay/mix data: a seeded subset (recipe ``{..., limit: N}``) that leaves the eval
    items out, or a whole file checked to hold none of them."""
    used = [k for k in GENERAL_KEYS if recipe.get(k) and any(_uses(m, k) for m in picked.values())]
    if not used:
        return recipe
    held_out = _eval_instruction_ids(recipe, out, progress)
    recipe = dict(recipe)
    for key in used:
        limit = (recipe.get("_subset") or {}).get(key)
        # A hub id becomes its cached file here: the disjointness below is checked on the data itself.
        recipe[key] = str(preflight.general_path(recipe[key], _where(recipe, key)))
        if limit is None:
            if held_out:
                check_disjoint(recipe[key], held_out, _where(recipe, key))
            continue
        path = out / "data" / f"{key}.jsonl"
        cfg = dict(source=recipe[key], limit=limit, seed=int(recipe.get("seed", 0)), held_out=held_out,
                   where=_where(recipe, key))
        stages.append(Stage("subset", key, path, cfg, f"sample {limit} {key} instructions"
                            + (f" ({len(held_out)} eval items left out)" if held_out else "")))
        recipe[key] = str(path)
    return recipe


def _report_status(stage: Stage) -> str:
    return report.output_status(stage.out)


def _eval_status(stage: Stage) -> str:
    return harness.output_status(stage.config)


def _generate_status(stage: Stage) -> str:
    return generate_files.output_status(stage.config)


def _finetune_status(stage: Stage) -> str:
    return tuner.output_status(stage.out)


# Each stage answers for its own files: the pipeline asks, and never looks inside them.
STATUS = {"sample": lambda st: "done" if st.out.exists() else "to do", "generate": _generate_status,
          "subset": lambda st: "done" if st.out.exists() else "to do",
          "translate": lambda st: "done" if st.out.exists() else "to do",
          "finetune": _finetune_status, "eval": _eval_status, "report": _report_status}


def check_sources(recipe: dict, out, progress: bool = False) -> str:
    """Where the model, the training pairs, the replay/mix data and every suite's test set (a method's own
    eval may add suites) come from (local, cached, or on the hub); raises a UserError for one that can't resolve."""
    picked = [methods.get(spec.get("method", name)) for name, spec in recipe["methods"].items()]
    used = {k: _where(recipe, k) for k in GENERAL_KEYS if recipe.get(k) and any(m.trains and _uses(m, k)
                                                                                 for m in picked)}
    cfgs = [_eval_stage(recipe, [], Path(out), progress, m).config
            for m in (None, *(m for m, spec in recipe["methods"].items() if (spec or {}).get("eval")))]
    return preflight.format_sources(preflight.model_status(recipe.get("model")),
                                    preflight.data_sources(recipe, cfgs, used))


def format_plan(recipe: dict, out, stages: list[Stage], target=None) -> str:
    lines = [f"plan for {recipe['_path']} -> {out}"]
    for st in stages:
        lines.append(f"  {st.name:14s} {st.what:40s} {st.out}  [{st.status()}]")
        if st.memory is not None:
            lines.append(f"  {'':14s} memory: {st.memory.line()}")
    if target is not None:
        lines.append(f"memory: every stage fits {target.what}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plan -> stage calls

def _run_sample(st: Stage, progress: bool):
    r = st.config
    if not st.out.exists():
        pairs = load_pairs(r["train_data"], r.get("pairs"), limit=int(r["limit"]), seed=int(r.get("seed", 0)))
        st.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(st.out, "".join(json_line({"id": p.id, "src": p.src, "ref": p.ref, "src_lang": p.src_lang,
                                                     "tgt_lang": p.tgt_lang}) + "\n" for p in pairs))


def _run_subset(st: Stage, progress: bool):
    c = st.config
    if not st.out.exists():
        rows = [r for r in load_instructions(c["source"]) if r["id"] not in c["held_out"]]
        if len(rows) < c["limit"]:
            raise UserError(f"{c['where']}: {c['source']} has {len(rows)} instructions besides the eval "
                            f"suites', fewer than limit {c['limit']}")
        st.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(st.out, "".join(json_line(r) + "\n" for r in sample(rows, c["limit"], c["seed"])))
    check_disjoint(st.out, c["held_out"], c["where"])  # also a file left by an earlier run


def _run_generate(st: Stage, progress: bool):
    _log(generate_summary(generate(st.config, progress=progress)))


def _run_finetune(st: Stage, progress: bool):
    restart = tuner.restart_settings(st.out)
    if restart is None:
        _log(f"{st.name}: finetune already complete in {st.out}")
        return
    cfg = dataclasses.replace(st.config, **restart).validate()
    _log(f"{st.name}: finetune {cfg.method} -> {st.out}" + (" (resuming)" if cfg.resume else ""))
    tuner.finetune(cfg)


def _run_eval(st: Stage, progress: bool):
    results = harness.evaluate(st.config)
    _track_scores(st.config.models, results)
    return results


def _track_scores(specs, results: dict) -> None:
    """Each trained method's headline scores (the report's columns, not its cost columns) into the
    tracker runs its finetune reported to (finetune.report_to)."""
    keys = [c.key for c in report.columns() if not c.key.startswith(("train_", "gen_"))]
    for spec in specs:
        if spec.adapter and spec.scale is None and spec.name in results:  # a scaled run is no training run
            row = report.summarize(results[spec.name])
            done = tracking.log_scores(spec.adapter, {k: row[k] for k in keys if k in row})
            if done:
                _log(f"{spec.name}: eval scores -> {', '.join(done)}")


def _run_report(st: Stage, progress: bool):
    return report.report(st.config["runs"], st.out, baselines=st.config["baselines"])


def _run_translate(st: Stage, progress: bool):
    if not st.out.exists():
        s = translate_suite.translate_suite(st.config)
        _log(f"{st.name}: {translate_suite.format_summary(s)}")


RUN = {"sample": _run_sample, "subset": _run_subset, "translate": _run_translate, "generate": _run_generate,
       "finetune": _run_finetune, "eval": _run_eval,
       "report": _run_report}


def _log(m: str) -> None:
    print(f"[run] {m}", flush=True)


def run(recipe: dict, out, *, progress: bool = True, check: bool = False, fit_for: str | None = None) -> dict:
    """Plan the recipe (every stage's settings checked first, and whether each fits in memory), then
    run the stages in order; ``check``: only return the plan; ``fit_for``: see memory.parse_target."""
    check_out(out)
    sources = check_sources(recipe, out, progress)  # every data source and the model, before any work
    stages = plan(recipe, out, progress)
    target = preflight.check_memory(recipe, stages, fit_for)
    if check:
        return {"plan": stages, "target": target, "sources": sources}
    out = check_writable_dir(out)
    with claim(out):  # one writer per run directory; each stage also holds its own output
        return _run_stages(recipe, out, stages, progress)


def _run_stages(recipe: dict, out: Path, stages: list[Stage], progress: bool) -> dict:
    t0 = time.perf_counter()
    atomic_write_json(out / "recipe.json", record(recipe))
    done, timings = {}, {}
    for st in stages:
        ts = time.perf_counter()
        if st.kind in ("generate", "eval"):
            _log(f"{st.name}: {st.what} -> {st.out}" if st.kind == "generate" else st.what)
        result = RUN[st.kind](st, progress)
        done[st.kind] = {**done.get("eval", {}), **result} if st.kind == "eval" else result
        if st.kind in ("generate", "finetune"):
            timings[st.name] = round(timings.get(st.name, 0) + time.perf_counter() - ts, 1)
    summary = {"recipe": recipe["_path"], "out": str(out), "methods": list(recipe["methods"]),
               "stage_wall_s": timings, "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "summary.json", summary)
    _log(f"done in {summary['wall_s']} s: {out / 'report' / 'report.md'}, {out / 'report' / 'report.html'}")
    return {"results": done["eval"], "report": done["report"], "summary": summary, "plan": stages}
