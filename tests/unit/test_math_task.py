from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from mft.errors import MftError
from mft.records import problems_digest
from mft.tasks import get_task, latex
from mft.tasks.latex import call_with_timeout
from mft.tasks.math_task import SUBJECTS, MathTask, parse_level
from mft.tasks.spans import boxed_spans, last_boxed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MATH_FILE = FIXTURES / "math_sample.jsonl"

task = MathTask()  # hub source: never loaded by these tests, only used for scoring

# -- gold answers: the last \boxed{} -----------------------------------------------------------------------

BOXED_CASES = {
    "simple": (r"so $x = \boxed{5}$.", "5"),
    "nested braces": (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    "deeply nested": (r"\boxed{\frac{\sqrt{3}}{\sqrt{2}+1}}", r"\frac{\sqrt{3}}{\sqrt{2}+1}"),
    "last of several": (r"first \boxed{3}, then \boxed{7}", "7"),
    "fbox": (r"the perimeter is $\fbox{12}$", "12"),
    "boxed with space form": (r"so the answer is $\boxed 9$.", "9"),
    "boxed space then braces": (r"\boxed {4}", "4"),
    "escaped braces": (r"$\boxed{\{0, 1\}}$", r"\{0, 1\}"),
    "matrix rows": (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    "text inside": (r"\boxed{\text{(C)}}", r"\text{(C)}"),
    "unclosed last box falls back to earlier": (r"\boxed{4} and then \boxed{5", "4"),
    "no box": ("the answer is 4", None),
    "boxed as part of a longer word is not a box": (r"\boxedx{3}", None),
}


@pytest.mark.parametrize("name", list(BOXED_CASES))
def test_last_boxed(name: str) -> None:
    text, expected = BOXED_CASES[name]
    assert last_boxed(text) == expected


def test_boxed_spans_in_order() -> None:
    assert boxed_spans(r"\boxed{1} x \fbox{2} y \boxed 3") == ["1", "2", "3"]


# -- extraction from responses -----------------------------------------------------------------------------

EXTRACT_CASES = {
    "boxed": (r"Therefore the answer is $\boxed{\frac{3}{4}}$.", r"\frac{3}{4}"),
    "last box wins": (r"Maybe $\boxed{2}$? No: recomputing gives $\boxed{3}$.", "3"),
    "box beats answer-is": (r"The answer is 5. Final: \boxed{6}", "6"),
    "dollar signs inside box": (r"\boxed{$12$}", "12"),
    "answer is with math span": (r"So the final answer is $x = 3$. Done.", "x = 3"),
    "answer is plain": ("The answer is 42.", "42"),
    "answer colon": ("Answer: \\frac{1}{2}", r"\frac{1}{2}"),
    "latest answer-is wins": ("The answer is 4. Wait, the answer is 5.", "5"),
    "nothing": ("I cannot solve this.", None),
    "empty box": (r"\boxed{}", None),
    "empty": ("", None),
}


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_extract(name: str) -> None:
    text, expected = EXTRACT_CASES[name]
    assert task.extract_answer(text) == expected


# -- equivalence (response answer, gold answer, expected) --------------------------------------------------

EQUIV_CASES = {
    # fractions
    "same fraction": (r"\frac{1}{2}", r"\frac{1}{2}", True),
    "dfrac vs frac": (r"\dfrac{1}{2}", r"\frac{1}{2}", True),
    "tfrac vs shorthand": (r"\tfrac{3}{4}", r"\frac34", True),
    "frac12 shorthand": (r"\frac12", r"\frac{1}{2}", True),
    "0.5 vs frac12": ("0.5", r"\frac12", True),
    "slash vs frac": ("1/2", r"\frac{1}{2}", True),
    "unreduced fraction": (r"\frac{2}{4}", r"\frac{1}{2}", True),
    "different fractions": (r"\frac{1}{3}", r"\frac{1}{2}", False),
    "rounded decimal is not a third": ("0.33", r"\frac{1}{3}", False),
    "3/4 vs 0.75": (r"\frac{3}{4}", "0.75", True),
    "negative in numerator": (r"-\frac{1}{2}", r"\frac{-1}{2}", True),
    "sign matters in fractions": (r"\frac{1}{2}", r"-\frac{1}{2}", False),
    # units and text
    "units in text": (r"5\text{ cm}", "5", True),
    "units in gold": ("5", r"5\text{ inches}", True),
    "unit word in text": (r"4\text{ apples}", "4", True),
    "same text answer": (r"\text{Devon}", r"\text{Devon}", True),
    "different text answers": (r"\text{even}", r"\text{odd}", False),
    "text case": (r"\text{no solution}", r"\text{No solution}", True),
    "dollar sign": (r"\$18", "18", True),
    "percent": (r"25\%", "25", True),
    # degrees
    "degrees circ": (r"90^\circ", "90", True),
    "degrees braced circ": (r"45^{\circ}", "45", True),
    "degrees text": (r"90 \text{ degrees}", "90", True),
    "wrong angle": (r"30^\circ", "60", False),
    # intervals and sets
    "same interval": ("[1,3)", "[1, 3)", True),
    "interval endpoints differ": ("[1,3)", "(1,3]", False),
    "left right infinity": (r"\left(-\infty, 3\right]", r"(-\infty,3]", True),
    "union of intervals": (r"(-\infty,0)\cup(1,\infty)", r"(-\infty, 0) \cup (1, \infty)", True),
    "union with a closed end": (r"(-\infty,0)\cup(1,\infty)", r"(-\infty, 0] \cup (1, \infty)", False),
    "set order": (r"\{1, 2\}", r"\{2, 1\}", True),
    "solution list order": ("1, 2", "2, 1", True),
    # matrices, points
    "matrix spacing": (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    "matrix entries differ": (
        r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
        r"\begin{pmatrix}2\\1\end{pmatrix}",
        False,
    ),
    "bmatrix vs pmatrix": (
        r"\begin{bmatrix} 1 & 0 \\ 0 & 1 \end{bmatrix}",
        r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}",
        True,
    ),
    "polar point": (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
    "point order matters": ("(1,2)", "(2,1)", False),
    # equations vs values
    "x=3 vs 3": ("x=3", "3", True),
    "3 vs x=3": ("3", "x=3", True),
    "x=4 vs 3": ("x = 4", "3", False),
    "y = expression vs expression": ("y = 2x+1", "2x+1", True),
    # radicals, pi, expressions
    "sqrt simplified": (r"2\sqrt{2}", r"\sqrt{8}", True),
    "sqrt shorthand": (r"5\sqrt2", r"5\sqrt{2}", True),
    "sqrt over 2": (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    "sqrt3 over 2 forms": (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    "pi spacing": (r"2\pi", r"2 \pi", True),
    "pi is not 3.14": (r"\pi", "3.14", False),
    "expanded polynomial": ("x^2+2x+1", "(x+1)^2", True),
    "commuted sum": ("1+2x", "2x+1", True),
    "different expressions": ("x+1", "x-1", False),
    "power evaluated": ("2^{10}", "1024", True),
    "complex number order": ("3+4i", "4i+3", True),
    "infinity": (r"\infty", r"\infty", True),
    # numbers
    "thousands comma": ("1,000", "1000", True),
    "latex thousands": ("10{,}000", "10000", True),
    "integer vs float": ("10.0", "10", True),
    "trailing period": ("7.", "7", True),
    "negative": ("-5", "-5", True),
    "sign differs": ("-5", "5", False),
    "different integers": ("6", "7", False),
    "base subscript same": ("1011_2", "1011_2", True),
    "base subscript differs": ("1011_2", "1101_2", False),
    # multiple choice written in MATH style
    "choice letter in text": (r"\text{(C)}", r"\text{(C)}", True),
    "bare letter vs text letter": ("C", r"\text{(C)}", True),
    "different letters": ("B", r"\text{(C)}", False),
    # missing
    "missing response answer": (None, "5", False),
    "missing gold": ("5", None, False),
    "empty answer": ("", "5", False),
    "number vs variable": (r"\frac{1}{2}", "x", False),
}


@pytest.mark.parametrize("name", list(EQUIV_CASES))
def test_equivalence(name: str) -> None:
    a, b, expected = EQUIV_CASES[name]
    assert task.is_equivalent(a, b) is expected


def test_at_least_40_equivalence_cases() -> None:
    assert len(EQUIV_CASES) >= 40
    assert sum(1 for *_, e in EQUIV_CASES.values() if e is False) >= 15


def test_score_uses_the_last_box() -> None:
    assert task.score(r"First \boxed{2}, finally \boxed{\dfrac{1}{2}}.", r"\frac{1}{2}") is True
    assert task.score(r"First \boxed{\frac{1}{2}}, finally \boxed{2}.", r"\frac{1}{2}") is False
    assert task.score("I give up.", "5") is False


# -- timeout -----------------------------------------------------------------------------------------------


def _busy(seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return True


def test_timeout_on_main_thread_interrupts_a_slow_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(latex, "_symbolic_equal", lambda a, b: _busy(30.0))
    slow = MathTask(timeout_s=0.3)
    start = time.monotonic()
    assert slow.is_equivalent("x+1", "y+2") is False  # not equal as strings: goes to the (slow) verifier
    assert time.monotonic() - start < 3.0


def test_timeout_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latex, "_symbolic_equal", lambda a, b: time.sleep(2.0) or True)
    slow = MathTask(timeout_s=0.2)
    out: dict[str, Any] = {}

    def worker() -> None:
        start = time.monotonic()
        out["result"] = slow.is_equivalent("x+1", "y+2")
        out["seconds"] = time.monotonic() - start

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert out["result"] is False
    assert out["seconds"] < 1.5


def test_fast_comparison_is_not_cut_and_previous_signal_handler_is_restored() -> None:
    import signal

    before = signal.getsignal(signal.SIGALRM)
    assert call_with_timeout(lambda: 7, 1.0, 0) == 7
    assert call_with_timeout(lambda: _busy(5.0), 0.2, False) is False
    assert signal.getsignal(signal.SIGALRM) == before
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_errors_inside_a_timed_call_propagate() -> None:
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        call_with_timeout(boom, 1.0, None)


# -- loading -----------------------------------------------------------------------------------------------


def _gold_by_line(t: MathTask) -> dict[int, str]:
    out = {}
    for split in ("train", "test"):
        for p in t.load(split):
            out[int(p.id.rsplit(":", 1)[1])] = p.answer
    return out


def test_gold_from_fixture_default_levels() -> None:
    golds = _gold_by_line(MathTask(data=MATH_FILE))
    assert golds == {
        1: r"\frac{1}{2}",  # nested \boxed{\frac{1}{2}}
        2: "5",
        3: "7",  # the last of two boxes
        4: "12",  # \fbox
        5: "9",  # \boxed 9
        8: r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
        10: r"\text{(C)}",
        11: r"\{0, 1\}",
        12: r"2\sqrt{2}",
    }  # line 6 is Level 5, line 9 Level 4, line 7 "Level ?": not candidates


def test_level_filter() -> None:
    all_levels = _gold_by_line(MathTask(data=MATH_FILE, levels=[1, 2, 3, 4, 5]))
    assert all_levels[6] == "(-1, 1)" and all_levels[9] == r"\dfrac{3}{8}"
    assert 7 not in all_levels  # "Level ?" never matches a filter
    assert 7 in _gold_by_line(MathTask(data=MATH_FILE, levels=None))
    only_one = MathTask(data=MATH_FILE, levels=[1])
    assert all(p.meta["level"] == 1 for s in ("train", "test") for p in only_one.load(s))


def test_levels_null_in_a_config_keeps_every_level(tmp_path: Path) -> None:
    """`levels: null` in a config's task_options asks for all levels, not for the default 1-3."""
    from mft.config import DebateConfig, load_config
    from mft.pipeline.assemble import build_task

    path = tmp_path / "math.yaml"
    path.write_text(f"task: math\ndata: {MATH_FILE}\ntask_options:\n  levels: null\n")
    every = build_task(load_config(DebateConfig, path))
    assert isinstance(every, MathTask) and every.levels is None
    assert set(_gold_by_line(every)) == set(range(1, 13))  # levels 4, 5 and "Level ?" too
    path.write_text(f"task: math\ndata: {MATH_FILE}\n")
    default = build_task(load_config(DebateConfig, path))
    assert isinstance(default, MathTask) and default.levels == (1, 2, 3)


@pytest.mark.parametrize(
    ("value", "expected"), [("Level 2", 2), ("level 5", 5), (3, 3), ("4", 4), ("Level ?", None), (None, None)]
)
def test_parse_level(value: Any, expected: int | None) -> None:
    assert parse_level(value) == expected


def test_splits_disjoint_seeded_and_meta() -> None:
    t = MathTask(data=MATH_FILE, levels=None)
    train, test = t.load("train", seed=3), t.load("test", seed=3)
    assert train and test
    assert not {p.question for p in train} & {p.question for p in test}
    assert len(train) + len(test) == 12  # every row of the fixture, "Level ?" included
    assert [p.id for p in t.load("test", seed=3)] == [p.id for p in test]
    assert t.load_info["split_seed"] == 3 and "problem_hashes" not in t.load_info
    assert problems_digest(t.load("test", seed=3)) == problems_digest(test)
    p = test[0]
    assert set(p.meta) >= {"source", "level", "type"} and "math_sample.jsonl, line" in p.meta["source"]


def test_prompt_asks_for_boxed() -> None:
    p = MathTask(data=MATH_FILE).load("test")[0]
    prompt = task.question_prompt(p)
    assert p.question in prompt
    assert "\\boxed{answer}" in prompt and prompt.startswith("Can you solve the following math problem?")


# -- bad input ---------------------------------------------------------------------------------------------


def _write(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"problem": "What is 1+1?", "solution": r"$\boxed{2}$", "level": "Level 1", "type": "Algebra"}


def test_missing_solution_names_file_line_field(tmp_path: Path) -> None:
    row = {k: v for k, v in GOOD.items() if k != "solution"} | {"problem": "What is 2+2?"}
    path = _write(tmp_path, [GOOD, row])
    with pytest.raises(MftError) as err:
        MathTask(data=path).load("test")
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "'solution'" in msg


def test_missing_level_is_an_error_only_when_filtering(tmp_path: Path) -> None:
    row = {k: v for k, v in GOOD.items() if k != "level"}
    path = _write(tmp_path, [row])
    with pytest.raises(MftError, match=r"line 1: missing field 'level'"):
        MathTask(data=path).load("test")
    t = MathTask(data=path, levels=None)
    assert len(t.load("train")) + len(t.load("test")) == 1


def test_unboxed_gold_is_an_error_or_skipped(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "problem": "What is 3+3?", "solution": "It is 6."}]
    path = _write(tmp_path, rows)
    with pytest.raises(MftError) as err:
        MathTask(data=path).load("train")
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "'solution'" in msg and "boxed" in msg
    t = MathTask(data=path, skip_bad_gold=True)
    loaded = t.load("train") + t.load("test")
    assert [p.answer for p in loaded] == ["2"]
    total_skipped = 0
    for split in ("train", "test"):
        t.load(split)
        total_skipped += t.skipped
    assert total_skipped == 1


def test_hub_loads_every_subject_config(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, config: str | None = None, split: str | None = None) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return [{**GOOD, "problem": f"{config} {split} problem", "solution": rf"\boxed{{{len(calls)}}}"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = MathTask().load("test")
    assert calls == [("EleutherAI/hendrycks_math", s, "test") for s in SUBJECTS]
    assert sorted(p.id for p in problems) == sorted(f"test-{s}-0" for s in SUBJECTS)
    calls.clear()
    MathTask(hub_name="someone/MATH-copy").load("train")
    assert calls == [("someone/MATH-copy", None, "train")]


def test_unreachable_hub_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(
            "Couldn't reach 'EleutherAI/hendrycks_math' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(MftError) as err:
        get_task("math").load("test")
    text = str(err.value)
    assert "EleutherAI/hendrycks_math" in text and "local" in text and "\n" not in text
