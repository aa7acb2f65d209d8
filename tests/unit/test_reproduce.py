"""`mft reproduce`: one run per method, same problems and seeds, identical stages shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mft.backends.base import GenerationRequest
from mft.config import RunConfig
from mft.errors import MftError
from mft.manifest import settings_diff
from mft.methods import BY_KEY, DEFAULT_KEYS, METHODS, RATIONALIZING, of_run
from mft.pipeline.reproduce import KEYS, _debate_signature, method_configs, reproduce, reproduce_seeds
from mft.pipeline.run import run
from tests.unit.test_pipeline import FinetuningScripted, _cfg, _gold_for_agent_0


def _base(tmp_path: Path, **kw: object) -> RunConfig:
    return _cfg(tmp_path, **{"name": "cmp", "agents": 3, **kw})


def _diff(old: dict[str, Any], cfg: RunConfig) -> list[str]:
    """The settings that keep `cfg` from continuing a run made with config `old` (the methods' rule)."""
    return settings_diff(old, cfg, rationalizing=RATIONALIZING)


def _runner(scripted):  # type: ignore[no-untyped-def]
    def go(cfg: RunConfig, progress: bool, backend: object) -> list:
        fs = FinetuningScripted(scripted)
        fs.backend.respond = _gold_for_agent_0
        return run(cfg, progress=progress, backend=fs.backend)

    return go


def test_each_method_gets_its_own_run_with_the_same_settings(tmp_path: Path) -> None:
    configs = method_configs(_base(tmp_path, lora_rank=4), list(KEYS))
    assert {k: (c.method, c.summarize) for k, c in configs.items()} == {
        m.key: (m.run_as, m.summarize) for m in METHODS
    }
    assert {c.run_dir for c in configs.values()} == {tmp_path / "cmp" / k for k in KEYS}
    assert all(c.lora_rank == 4 and c.iterations == 2 and c.seed == 0 for c in configs.values())


def test_a_method_can_sample_at_its_own_temperature(tmp_path: Path) -> None:
    """The paper's Fig. 10: Single-agent FT at temperature 2 beside Ours at 1, in one comparison; its
    iteration 0 is its own (not shared with Ours', which sampled at 1)."""
    base = _base(tmp_path, temperature=1.0, method_temperatures={"single_ft": 2.0})
    configs = method_configs(base, ["ours", "single_ft", "star"])
    assert {k: c.temperature for k, c in configs.items()} == {"ours": 1.0, "single_ft": 2.0, "star": 1.0}
    assert _debate_signature(configs["ours"], False) != _debate_signature(configs["single_ft"], False)
    assert _debate_signature(configs["ours"], False) == _debate_signature(configs["star"], False)
    with pytest.raises(ValidationError, match="unknown method 'singel_ft'"):
        _base(tmp_path, method_temperatures={"singel_ft": 2.0})


def test_a_runs_row_and_its_rules_come_from_the_methods_table() -> None:
    """`of_run` names the row of a run (a manifest without a method is an `ours` run); the row says how many
    rounds its training debate has and from which iteration its society is told the agents' ids."""
    assert of_run("ours", True) is BY_KEY["ours"] and of_run(None, False) is BY_KEY["ours_no_summary"]
    assert of_run("star", True) is BY_KEY["star"]
    with pytest.raises(KeyError):
        of_run("no_such_method", True)
    assert [m.key for m in METHODS if m.training_rounds(3) == 1] == ["majority_ft", "star"]
    assert all(m.training_rounds(3) == 3 for m in METHODS if m.key not in ("majority_ft", "star"))
    told = {m.key: (m.tells_ids(0), m.tells_ids(1), m.tells_ids(4)) for m in METHODS}
    assert told.pop("unique_id") == (False, True, True)
    assert set(told.values()) == {(False, False, False)}


def test_reproduce_runs_every_method_and_shares_identical_stages(scripted, tmp_path: Path) -> None:
    root = reproduce(_base(tmp_path), progress=False, runner=_runner(scripted))
    index = json.loads((root / "reproduce.json").read_text())
    assert index["task"] == "arithmetic" and index["methods"] == {k: k for k in DEFAULT_KEYS}
    for key in DEFAULT_KEYS:
        assert json.loads((root / key / "iter_2/eval/results.json").read_text())["iteration"] == 2
    # a shared stage equals what the method computes on its own
    alone = _base(tmp_path, name="alone", method="star", summarize=True)
    _runner(scripted)(alone, False, None)
    for rel in ("iter_0/eval/debate.jsonl", "iter_1/debate.jsonl", "iter_1/data/model.jsonl"):
        assert (root / "star" / rel).read_bytes() == (alone.run_dir / rel).read_bytes(), rel
    # base readings are one measurement: the same records in every method with the summary setting of Ours
    base = (root / "ours/iter_0/eval/debate.jsonl").read_bytes()
    assert all(
        (root / k / "iter_0/eval/debate.jsonl").read_bytes() == base
        for k in DEFAULT_KEYS
        if k != "ours_no_summary"
    )
    assert (root / "ours_no_summary/iter_0/eval/debate.jsonl").read_bytes() != base  # no summaries in it
    # ours and single_ft debate alike in iteration 1; majority_ft and star sample one round
    assert (root / "single_ft/iter_1/debate.jsonl").read_bytes() == (
        root / "ours/iter_1/debate.jsonl"
    ).read_bytes()
    assert (root / "star/iter_1/debate.jsonl").read_bytes() == (
        root / "majority_ft/iter_1/debate.jsonl"
    ).read_bytes()


def test_unknown_method_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MftError, match="unknown method.*bogus"):
        reproduce(_base(tmp_path), methods=["ours", "bogus"], progress=False, runner=lambda *a, **k: [])


def test_a_later_subset_keeps_the_methods_already_run_in_the_report(scripted, tmp_path: Path) -> None:
    reproduce(_base(tmp_path), methods=["star", "ours"], progress=False, runner=_runner(scripted))
    root = reproduce(_base(tmp_path), methods=["majority_ft"], progress=False, runner=_runner(scripted))
    index = json.loads((root / "reproduce.json").read_text())
    assert sorted(index["methods"]) == ["majority_ft", "ours", "star"]
    assert "Majority FT" in (root / "report.md").read_text() and "STaR" in (root / "report.md").read_text()
    # a method run with other settings under the same name is not listed with the new ones
    other = _base(tmp_path, n_test=3)
    with pytest.raises(MftError, match="other settings"):
        reproduce(other, methods=["ours"], progress=False, runner=_runner(scripted))
    from mft.pipeline.reproduce import earlier_methods

    assert earlier_methods(other) == []
    assert sorted(earlier_methods(_base(tmp_path))) == ["majority_ft", "ours", "star"]


def test_runs_made_before_a_setting_existed_continue_with_the_value_they_used(tmp_path: Path) -> None:
    cfg = _base(tmp_path)
    old = json.loads(cfg.model_dump_json())
    for key in ("ft_group_by_length", "ft_precision"):
        del old[key]  # a manifest written before these settings existed
    assert _diff(old, cfg) == ["ft_group_by_length", "ft_precision"]  # the new defaults differ
    legacy = cfg.model_copy(update={"ft_group_by_length": False, "ft_precision": "fp32"})
    assert _diff(old, legacy) == []


def test_a_manifest_with_the_old_critic_mix_name_is_read_as_the_share_of_corrected(tmp_path: Path) -> None:
    from mft.rundir import RunDir

    cfg = _base(tmp_path, critic_corrected_share=0.75)
    old = json.loads(cfg.model_dump_json())
    del old["critic_corrected_share"]
    old["critic_positive_fraction"] = 0.25  # a run made when the setting named the share of D_C+
    assert _diff(old, cfg) == []
    assert _diff(old, _base(tmp_path)) == ["critic_corrected_share"]  # the default (2/3) differs
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "manifest.json").write_text(json.dumps({"config": old}))
    assert RunDir(cfg.run_dir).run_config("").critic_corrected_share == 0.75


def test_older_star_runs_continue_without_rationalization_others_with_the_default(tmp_path: Path) -> None:
    for method, before in (("star", False), ("ours", True)):
        cfg = _base(tmp_path, method=method)
        old = json.loads(cfg.model_dump_json())
        del old["star_rationalize"]  # a manifest written before the setting existed
        assert _diff(old, cfg.model_copy(update={"star_rationalize": before})) == []
        assert _diff(old, cfg.model_copy(update={"star_rationalize": not before})) == ["star_rationalize"]
    # the rule is the caller's: told that no method rationalizes, an older STaR run continues with the default
    star = _base(tmp_path, method="star")
    old = json.loads(star.model_dump_json())
    del old["star_rationalize"]
    assert star.star_rationalize and settings_diff(old, star, rationalizing=()) == []
    assert settings_diff(old, star, rationalizing={"star"}) == ["star_rationalize"]


def _seeded_runner(scripted):  # type: ignore[no-untyped-def]
    """Answers that depend on the seed: at seed s, agent_1 is wrong in round 1 on problems whose answer
    has the parity of s; finetuned models (gen_/critic_/model) are right except on every (s + 2)-th answer."""

    def go(cfg: RunConfig, progress: bool, backend: object) -> list:
        def respond(req: GenerationRequest) -> str:
            if req.agent == "summarizer":
                return "The agents disagree."
            expr = req.messages[0].content.split("result of ")[1].split("?")[0]
            gold = eval(expr)  # noqa: S307 - our own arithmetic prompt
            first = sum(m.role == "assistant" for m in req.messages) == 0
            if req.agent == "agent_1" and first and gold % 2 == cfg.seed % 2:
                return "The answer is 1."
            if not req.agent.startswith("agent_") and gold % (cfg.seed + 2) == 0:
                return "The answer is -1."
            return f"The answer is {gold}."

        fs = FinetuningScripted(scripted)
        fs.backend.respond = respond
        return run(cfg, progress=progress, backend=fs.backend)

    return go


def test_seeds_each_get_a_reproduce_directory_and_the_report_reads_their_mean(
    scripted, tmp_path: Path
) -> None:
    base = _base(tmp_path, iterations=1, n_test=8)
    root = reproduce_seeds(
        base, [0, 1], methods=["ours", "single_ft"], progress=False, runner=_seeded_runner(scripted)
    )
    assert json.loads((root / "seeds.json").read_text())["seeds"] == {"0": "seed_0", "1": "seed_1"}
    per_seed = []
    for s in (0, 1):
        assert json.loads((root / f"seed_{s}/ours/manifest.json").read_text())["config"]["seed"] == s
        assert (root / f"seed_{s}/report.md").exists()  # each seed is a reproduce directory of its own
        per_seed.append(json.loads((root / f"seed_{s}/ours/iter_1/eval/results.json").read_text()))
    ours = [r["accuracy"]["debate"]["mean"] for r in per_seed]
    assert ours[0] != ours[1]  # the seeds differ here, so the mean and its seed s.e. are not trivial
    md = (root / "report.md").read_text()
    mean = (ours[0] + ours[1]) / 2
    se = abs(ours[0] - ours[1]) / 2  # two seeds: sd / sqrt(2) = |a - b| / 2
    assert f"| Ours | {100 * ours[0]:.1f} ± " in md and f" | {100 * mean:.1f} ± {100 * se:.1f} |" in md
    rows = json.loads((root / "paired.json").read_text())
    seeds = {r["seed"] for r in rows}
    assert seeds == {"0", "1", "mean"}
    by = {(r["seed"], r["method"]): r for r in rows}
    # the base model's debate against Ours: its difference moves with the seed, so the mean, its seed
    # s.e. and the t interval are not trivial (single_ft's scripted answers equal Ours', a difference of 0)
    d0, d1 = by["0", "debate"]["difference"], by["1", "debate"]["difference"]
    assert d0 != d1
    assert by["mean", "debate"]["difference"] == pytest.approx((d0 + d1) / 2)
    assert by["mean", "debate"]["p"] is None
    half = 12.706 * abs(d0 - d1) / 2  # t(0.975, 1 df) x the seed-to-seed se
    assert by["mean", "debate"]["ci_high"] == pytest.approx((d0 + d1) / 2 + half)
    assert by["mean", "single_ft"]["difference"] == pytest.approx(
        (by["0", "single_ft"]["difference"] + by["1", "single_ft"]["difference"]) / 2
    )
    # another seed later: added to the list, the earlier ones kept and not run again
    before = (root / "seed_0/ours/iter_1/eval/results.json").read_bytes()
    reproduce_seeds(base, [2], methods=["ours", "single_ft"], progress=False, runner=_seeded_runner(scripted))
    assert set(json.loads((root / "seeds.json").read_text())["seeds"]) == {"0", "1", "2"}
    assert (root / "seed_0/ours/iter_1/eval/results.json").read_bytes() == before
    assert "| method | seed 0 | seed 1 | seed 2 | mean ± seed s.e. |" in (root / "report.md").read_text()
    with pytest.raises(MftError, match="lists a seed twice"):
        reproduce_seeds(base, [3, 3], progress=False, runner=_seeded_runner(scripted))
