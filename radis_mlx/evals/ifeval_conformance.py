"""How far radis-mlx's IFEval checker agrees with the official one: both score the GPT-4 reference
responses shipped with the data, and every verdict that differs is listed."""

from __future__ import annotations

from pathlib import Path

from ..fileio import iter_jsonl
from .ifeval import load_prompts, read_responses, score_response


def conformance(data_dir) -> dict:
    """Agreement with the official checker's verdicts on the GPT-4 reference responses.

    data_dir: the ``ifeval`` data folder, or the shared ``data`` folder holding it.
    Instruction agreement compares each verdict; prompt agreement compares the
    follow-all verdict of each prompt.  ``disagreements`` lists every verdict
    that differs, with the prompt key, instruction id and mode.
    """
    d = Path(data_dir)
    if (d / "ifeval").is_dir():
        d = d / "ifeval"
    ref = d / "reference_results"
    by_prompt = {p.prompt: p for p in load_prompts(d / "input_data.jsonl")}
    resp_paths = sorted(ref.glob("input_response_data_*.jsonl"))
    if len(resp_paths) != 1:
        raise FileNotFoundError(f"{ref}: expected one input_response_data_*.jsonl, found {len(resp_paths)}")
    responses = read_responses(resp_paths[0])
    official = {}
    for mode in ("strict", "loose"):
        for lineno, row in iter_jsonl(ref / f"eval_results_{mode}.jsonl"):
            official.setdefault(row["prompt"], {})[mode] = row["follow_instruction_list"]

    per, dis = {}, []
    agree = {"strict": [0, 0], "loose": [0, 0]}  # [instruction agreements, prompt agreements]
    n_inst = 0
    passed = {(who, mode): [0, 0] for who in ("official", "ours") for mode in ("strict", "loose")}
    for prompt, verdicts in official.items():
        p = by_prompt[prompt]
        row = score_response(p, responses[prompt])
        ours = {"strict": row["follow_instruction_list"], "loose": row["loose_follow_instruction_list"]}
        n_inst += len(p.instruction_id_list)
        for mode in ("strict", "loose"):
            for who, v in (("official", verdicts[mode]), ("ours", ours[mode])):
                passed[who, mode][0] += all(v)
                passed[who, mode][1] += sum(v)
            agree[mode][1] += all(ours[mode]) == all(verdicts[mode])
            for iid, o, v in zip(p.instruction_id_list, ours[mode], verdicts[mode]):
                st = per.setdefault(iid, {"n": 0, "strict": 0, "loose": 0})
                st["n"] += mode == "strict"
                st[mode] += o == v
                agree[mode][0] += o == v
                if o != v:
                    dis.append({"key": p.key, "instruction_id": iid, "mode": mode, "official": v, "ours": o})
    n = len(official)
    return {
        "n_prompts": n, "n_instructions": n_inst,
        "instruction_agreement_strict": agree["strict"][0] / n_inst,
        "instruction_agreement_loose": agree["loose"][0] / n_inst,
        "prompt_agreement_strict": agree["strict"][1] / n,
        "prompt_agreement_loose": agree["loose"][1] / n,
        "per_instruction": {k: {"n": v["n"], "strict": v["strict"] / v["n"], "loose": v["loose"] / v["n"]}
                            for k, v in sorted(per.items())},
        "disagreements": dis,
        # the IFEval scores each checker gives the GPT-4 responses
        "scores": {who: {f"{lvl}_level_{mode}": passed[who, mode][i] / (n, n_inst)[i]
                         for mode in ("strict", "loose") for i, lvl in enumerate(("prompt", "instruction"))}
                   for who in ("official", "ours")},
    }
