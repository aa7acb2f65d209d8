from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from mft.errors import MftError
from mft.records import Problem, problems_digest
from mft.tasks import get_task, task_settings
from mft.tasks.base import pool_of
from mft.tasks.custom import CustomTask, normalize_text
from mft.tasks.gsm8k import GSM8KTask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHOICE_FILE = FIXTURES / "custom_choice.jsonl"
NUMBER_FILE = FIXTURES / "custom_numbers.jsonl"


def _everything(t: CustomTask, seed: int = 0) -> dict[str, str]:
    return {p.id: p.answer for s in ("train", "test") for p in t.load(s, seed=seed)}


def _by_line(t: CustomTask, seed: int = 0) -> dict[int, str]:
    """Gold answers by the 1-based line of their row (ids are not line numbers)."""
    return {_line(p): p.answer for s in ("train", "test") for p in t.load(s, seed=seed)}


def _line(p: Problem) -> int:
    return int(p.meta["source"].rsplit("line ", 1)[1])


def _choice(**kw: Any) -> CustomTask:
    return CustomTask(
        CHOICE_FILE, question_field="text", answer_field="label", answer_type="choice", choices="ABCD", **kw
    )


# -- number ------------------------------------------------------------------------------------------------


def test_number_gold_from_other_field_names() -> None:
    t = CustomTask(NUMBER_FILE, question_field="q", answer_field="a", answer_type="number")
    golds = _by_line(t)
    assert golds == {1: "24", 2: "2.5", 3: "3000", 4: "-7", 5: "1/3", 6: "120"}


NUMBER_SCORE_CASES = {
    "boxed": ("\\boxed{3,000}", "3000", True),
    "answer is decimal": ("The answer is 2.50.", "2.5", True),
    "fraction form": ("it is \\frac{1}{3} of a day", "1/3", True),
    "wrong": ("The answer is 25.", "24", False),
    "lenient last number": ("3 spiders have 24", "24", True),
}


@pytest.mark.parametrize("name", list(NUMBER_SCORE_CASES))
def test_number_scoring(name: str) -> None:
    response, gold, expected = NUMBER_SCORE_CASES[name]
    t = CustomTask(NUMBER_FILE, question_field="q", answer_field="a")
    assert t.score(response, gold) is expected


def test_number_strict_drops_the_fallback() -> None:
    t = CustomTask(NUMBER_FILE, question_field="q", answer_field="a", strict=True)
    assert t.extract_answer("3 spiders have 24") is None
    assert t.extract_answer("the answer is 24") == "24"


# -- choice ------------------------------------------------------------------------------------------------


def test_choice_gold_normalised_and_ids_from_field() -> None:
    golds = _everything(_choice(id_field="uid"))
    assert golds == {"cap-1": "B", "cap-2": "C", "cap-3": "D", "cap-4": "A", "sum-1": "B", "sum-2": "C"}


CHOICE_EXTRACT_CASES = {
    "paren at end": ("Paris is the capital. The answer is (B).", "B"),
    "last paren wins": ("(A) is wrong and (C) is right, so (C)", "C"),
    "boxed letter": ("\\boxed{D}", "D"),
    "boxed text paren": ("\\boxed{\\text{(B)}}", "B"),
    "answer colon": ("Answer: C", "C"),
    "answer is bare letter": ("The answer is A.", "A"),
    "lowercase paren after answer is": ("The answer is (b)", "B"),
    "letter outside choices": ("I think (E) is right", None),
    "pronoun is not a choice": ("I think so.", None),
    "no answer": ("no idea", None),
}


@pytest.mark.parametrize("name", list(CHOICE_EXTRACT_CASES))
def test_choice_extract(name: str) -> None:
    text, expected = CHOICE_EXTRACT_CASES[name]
    assert _choice().extract_answer(text) == expected


CHOICE_EQUIV_CASES = {
    "same": ("B", "B", True),
    "paren vs bare": ("(B)", "B", True),
    "case": ("b", "B", True),
    "different": ("A", "B", False),
    "missing": (None, "B", False),
    "not a letter": ("Paris", "B", False),
}


@pytest.mark.parametrize("name", list(CHOICE_EQUIV_CASES))
def test_choice_equivalence(name: str) -> None:
    a, b, expected = CHOICE_EQUIV_CASES[name]
    assert _choice().is_equivalent(a, b) is expected


def test_choice_gold_outside_the_letters_names_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    rows = [{"text": "Q1 (A) x (B) y", "label": "A"}, {"text": "Q2 (A) x (B) y", "label": "E"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    t = CustomTask(path, question_field="text", answer_field="label", answer_type="choice", choices="AB")
    with pytest.raises(MftError) as err:
        t.load("test")
    msg = str(err.value)
    assert str(path) in msg and "line 2" in msg and "'label'" in msg and "AB" in msg


def test_choice_prompt_is_du_et_al() -> None:
    t = _choice()
    p = t.load("test")[0]
    assert t.question_prompt(p).startswith(
        f"Can you answer the following question as accurately as possible? {p.question}"
    )
    assert "(X)" in t.question_prompt(p)


# -- exact and latex ---------------------------------------------------------------------------------------

EXACT_EXTRACT_CASES = {
    "boxed": ("\\boxed{Paris}", "Paris"),
    "answer is": ("The answer is Paris.", "Paris"),
    "answer colon bold": ("Answer: **Blue whale**", "Blue whale"),
    "nothing": ("I am not sure", None),
}


@pytest.mark.parametrize("name", list(EXACT_EXTRACT_CASES))
def test_exact_extract(name: str) -> None:
    text, expected = EXACT_EXTRACT_CASES[name]
    t = CustomTask(CHOICE_FILE, question_field="text", answer_field="label", answer_type="exact")
    assert t.extract_answer(text) == expected


EXACT_EQUIV_CASES = {
    "case and period": ("paris", "Paris.", True),
    "text wrapper and spaces": ("\\text{New  York}", "new york", True),
    "quotes": ('"Paris"', "Paris", True),
    "different": ("Paris", "London", False),
    "empty": ("", "", False),
    "missing": (None, "Paris", False),
}


@pytest.mark.parametrize("name", list(EXACT_EQUIV_CASES))
def test_exact_equivalence(name: str) -> None:
    a, b, expected = EXACT_EQUIV_CASES[name]
    t = CustomTask(CHOICE_FILE, question_field="text", answer_field="label", answer_type="exact")
    assert t.is_equivalent(a, b) is expected


def test_exact_normalisation() -> None:
    assert normalize_text("  **The  Moon!** ") == "the moon"


def test_latex_type(tmp_path: Path) -> None:
    path = tmp_path / "latex.jsonl"
    rows = [
        {"question": "Half of one?", "answer": "\\frac{1}{2}"},
        {"question": "Root of eight?", "answer": "so it is $\\boxed{2\\sqrt{2}}$"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    t = CustomTask(path, answer_type="latex")
    assert sorted(_everything(t).values()) == sorted(["\\frac{1}{2}", "2\\sqrt{2}"])
    assert t.score("so $\\boxed{0.5}$", "\\frac{1}{2}") is True
    assert t.score("so $\\boxed{\\sqrt{8}}$", "2\\sqrt{2}") is True
    assert t.score("so $\\boxed{3}$", "2\\sqrt{2}") is False
    assert "\\boxed{answer}" in t.question_prompt((t.load("train") + t.load("test"))[0])


# -- settings ----------------------------------------------------------------------------------------------


def test_custom_prompt_template() -> None:
    t = CustomTask(NUMBER_FILE, question_field="q", answer_field="a", prompt="Q: {question}\nA:")
    p = t.load("test")[0]
    assert t.question_prompt(p) == f"Q: {p.question}\nA:"


SETTINGS_ERRORS = {
    "unknown answer type": ({"answer_type": "boolean"}, "unknown answer type"),
    "prompt without question": ({"prompt": "Solve it."}, "{question}"),
    "choices not letters": ({"answer_type": "choice", "choices": "12"}, "choices"),
}


@pytest.mark.parametrize("name", list(SETTINGS_ERRORS))
def test_bad_settings(name: str) -> None:
    kw, fragment = SETTINGS_ERRORS[name]
    with pytest.raises(MftError, match=fragment.replace("{", r"\{").replace("}", r"\}")):
        CustomTask(NUMBER_FILE, **kw)


def test_version_follows_prompt_and_scoring_settings() -> None:
    base = CustomTask(NUMBER_FILE, question_field="q", answer_field="a")
    same = CustomTask(NUMBER_FILE, question_field="q", answer_field="a")
    assert base.version == same.version
    for kw in (
        {"prompt": "Q: {question}"},
        {"strict": True},
        {"answer_type": "latex"},
        {"answer_field": "b"},
    ):
        assert (
            CustomTask(NUMBER_FILE, **{"question_field": "q", "answer_field": "a", **kw}).version
            != base.version
        )


def test_needs_data() -> None:
    with pytest.raises(MftError, match="needs a data file"):
        get_task("custom")


def test_get_task_passes_settings_and_rejects_unknown_ones() -> None:
    t = get_task(
        "custom", data=str(CHOICE_FILE), question_field="text", answer_field="label", answer_type="choice"
    )
    assert isinstance(t, CustomTask) and t.answer_type == "choice"
    assert "answer_type" in task_settings("custom")
    with pytest.raises(MftError, match="'levels'"):
        get_task("custom", data=str(CHOICE_FILE), levels=[1])


def test_missing_question_field_setting(tmp_path: Path) -> None:
    t = CustomTask(NUMBER_FILE, question_field="question", answer_field="a")
    with pytest.raises(MftError) as err:
        t.load("test")
    msg = str(err.value)
    assert str(NUMBER_FILE) in msg and "line 1" in msg and "'question'" in msg and "q" in msg


def test_id_field_missing_and_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    rows = [{"id": "a", "question": "one?", "answer": 1}, {"question": "two?", "answer": 2}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(MftError, match=r"line 2: missing field 'id'"):
        _everything(CustomTask(path, id_field="id"))
    rows[1]["id"] = "a"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(MftError, match=r"line 2: problem id 'a' repeats .*line 1"):
        for seed in range(20):  # some seed puts both rows in the same pool
            _everything(CustomTask(path, id_field="id"), seed=seed)


def test_pool_of_is_keyed_by_seed() -> None:
    texts = [f"question {i}" for i in range(200)]
    pools0 = [pool_of(t, 0) for t in texts]
    assert 60 < pools0.count("test") < 140
    assert pools0 != [pool_of(t, 1) for t in texts]
    assert pools0 == [pool_of(t, 0) for t in texts]


def test_pool_of_formula_never_changes() -> None:
    # Every recorded split depends on this exact formula: blake2b-64 of "seed:key", first byte even -> test.
    keys = ["What is 1+1?", "question 7", "", "naïve café", str((1, 2, 3, 4, 5, 6)), str((30,) * 6)]
    for key in keys:
        for seed in (0, 1, 3):
            first = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()[0]
            assert pool_of(key, seed) == ("test" if first % 2 == 0 else "train")
    # the same, written out (computed with the formulas arithmetic and the dataset tasks had before)
    pinned = [("What is 1+1?", 0, "test"), ("question 7", 0, "train"), ("question 7", 1, "test")]
    pinned += [("", 0, "test"), ("naïve café", 3, "train"), (str((1, 2, 3, 4, 5, 6)), 0, "test")]
    pinned += [(str((30,) * 6), 0, "train"), (str((1, 2, 3, 4, 5, 6)), 1, "test")]
    assert [pool_of(key, seed) for key, seed, _ in pinned] == [pool for _, _, pool in pinned]


def test_single_file_split_is_unchanged() -> None:
    # which rows of the fixture fall in which pool, as before pool_of moved to tasks.base
    t = CustomTask(NUMBER_FILE, question_field="q", answer_field="a")
    lines = {
        (s, seed): sorted(_line(p) for p in t.load(s, seed=seed))
        for s in ("train", "test")
        for seed in (0, 1)
    }
    assert lines == {
        ("train", 0): [1, 2],
        ("test", 0): [3, 4, 5, 6],
        ("train", 1): [1, 2, 3, 5],
        ("test", 1): [4, 6],
    }


def test_problems_digest_follows_content_and_order() -> None:
    problems = GSM8KTask(data=FIXTURES / "gsm8k_sample.jsonl").load("test")
    h = problems_digest(problems)
    assert len(h) == 64 and h == problems_digest(list(problems))
    assert h != problems_digest(problems[::-1])
    changed = [problems[0].model_copy(update={"answer": "999"}), *problems[1:]]
    assert h != problems_digest(changed)


def test_line_separator_inside_a_json_string_is_not_a_new_row(tmp_path: Path) -> None:
    path = tmp_path / "ls.jsonl"
    rows = [{"question": "first\u2028part?", "answer": 1}, {"question": "second?", "answer": 2}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert _by_line(CustomTask(path)) == {1: "1", 2: "2"}


def test_importing_and_building_tasks_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mft.tasks import get_task\n"
        "get_task('gsm8k'); get_task('math')\n"
        "heavy = ('datasets', 'math_verify', 'sympy', 'torch', 'pyarrow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_missing_math_verify_is_reported_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a)
    )
    with pytest.raises(MftError, match="math-verify"):
        get_task("math")
    with pytest.raises(MftError, match="math-verify"):
        CustomTask(NUMBER_FILE, answer_type="latex")


def test_choices_listed_in_a_field_with_the_gold_as_an_index(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl"
    rows = [
        {"question": f"Capital number {i}?", "choices": ["Berlin", "Paris", "Rome"], "answer": i % 3}
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    t = CustomTask(path, answer_type="choice", choices="ABCD", choices_field="choices")
    problems = {p.question: p.answer for s in ("train", "test") for p in t.load(s)}
    assert problems["Capital number 4?: A) Berlin, B) Paris, C) Rome"] == "B"  # 4 % 3 = 1
    assert t.version.startswith("3-choice-")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "choices": "Berlin", "answer": 0}) + "\n", encoding="utf-8")
    with pytest.raises(MftError) as err:
        CustomTask(bad, answer_type="choice", choices_field="choices").load("test")
    assert "line 1" in str(err.value) and "'choices'" in str(err.value)
    with pytest.raises(MftError, match="index 3"):  # 3 choices listed: index 3 is not one
        bad.write_text(json.dumps({"question": "Q?", "choices": ["x", "y", "z"], "answer": 3}) + "\n")
        CustomTask(bad, answer_type="choice", choices_field="choices").load("test")
