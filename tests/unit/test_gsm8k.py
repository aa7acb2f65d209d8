from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mft.errors import MftError
from mft.records import problems_digest
from mft.tasks import get_task
from mft.tasks.base import BadGold
from mft.tasks.gsm8k import GSM8KTask
from mft.tasks.numbers import NumberAnswers, find_numbers, format_number, parse_number

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GSM_FILE = FIXTURES / "gsm8k_sample.jsonl"

lenient = GSM8KTask()
strict = GSM8KTask(strict=True)

# -- extraction --------------------------------------------------------------------------------------------

# text -> (lenient, strict)
EXTRACT_CASES = {
    "boxed": ("So she has \\boxed{18} apples.", "18", "18"),
    "boxed with dollar": ("He pays $\\boxed{\\$1,250}$.", "1250", "1250"),
    "boxed with units": ("\\boxed{18 \\text{ apples}}", "18", "18"),
    "boxed fraction": ("\\boxed{\\frac{3}{4}}", "0.75", "0.75"),
    "boxed equation takes its last number": ("\\boxed{x = 12}", "12", "12"),
    "last box wins": ("\\boxed{5} ... no, \\boxed{7}", "7", "7"),
    "box beats answer-is": ("The answer is 3. \\boxed{4}", "4", "4"),
    "answer is": ("12 - 5 = 7. The answer is 7.", "7", "7"),
    "answer is with currency": ("The final answer is $1,000.", "1000", "1000"),
    "answer colon bold": ("**Answer:** **42**", "42", "42"),
    "answer is first number after it": ("The answer is 5 apples for 3 people.", "5", "5"),
    "latest answer-is": ("The answer is 4. Wait, the answer is 6.", "6", "6"),
    "answer is negative": ("So the answer is -3 degrees.", "-3", "-3"),
    "hashes line": ("3 * 14 = 42\n#### 42", "42", "42"),
    "last number fallback": ("3 * 14 = 42 dollars", "42", None),
    "decimal fallback": ("She runs 2.5 miles.", "2.5", None),
    "sentence period is not a decimal": ("The total is 18.", "18", None),
    "minus is not a sign": ("10-5", "5", None),
    "thousands commas": ("It costs 1,234,567 in total", "1234567", None),
    "comma list is not a thousands number": ("1,2,3", "3", None),
    "list of thousands numbers": ("It costs 1,000, then 2,000", "2000", None),
    "number next to other scripts": ("共12个苹果", "12", None),
    "slash fraction": ("She ate 3/4 of it", "0.75", None),
    "repeating fraction stays a fraction": ("each gets 1/3", "1/3", None),
    "no number": ("I don't know.", None, None),
    "empty": ("", None, None),
}


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_extract_lenient(name: str) -> None:
    text, expected, _ = EXTRACT_CASES[name]
    assert lenient.extract_answer(text) == expected


@pytest.mark.parametrize("name", list(EXTRACT_CASES))
def test_extract_strict(name: str) -> None:
    text, _, expected = EXTRACT_CASES[name]
    assert strict.extract_answer(text) == expected


def test_strict_and_lenient_are_different_versions() -> None:
    assert lenient.version != strict.version
    assert get_task("gsm8k").version == lenient.version  # lenient is the default
    assert get_task("gsm8k", strict=True).extract_answer("so 7") is None


# -- equivalence -------------------------------------------------------------------------------------------

EQUIV_CASES = {
    "same": ("18", "18", True),
    "comma": ("1,000", "1000", True),
    "trailing .0": ("1000.0", "1000", True),
    "trailing zeros": ("2.50", "2.5", True),
    "half": ("0.5", "1/2", True),
    "latex half": ("\\frac{1}{2}", "0.5", True),
    "dollar": ("$18", "18", True),
    "negative": ("-5", "-5", True),
    "sign": ("-5", "5", False),
    "different": ("17", "18", False),
    "rounded is not equal": ("0.33", "1/3", False),
    "missing": (None, "5", False),
    "both missing": (None, None, False),
    "not a number": ("eighteen", "18", False),
    "two numbers": ("5 or 6", "5", False),
}


@pytest.mark.parametrize("name", list(EQUIV_CASES))
def test_equivalence(name: str) -> None:
    a, b, expected = EQUIV_CASES[name]
    assert lenient.is_equivalent(a, b) is expected


def test_score() -> None:
    assert lenient.score("so the answer is \\boxed{1,000}", "1000") is True
    assert lenient.score("no idea", "0") is False


# -- number helpers ----------------------------------------------------------------------------------------

NUMBER_CASES = {
    "int": ("42", "42"),
    "commas": ("1,234", "1234"),
    "negative": ("-5", "-5"),
    "decimal": ("2.50", "2.5"),
    "fraction": ("3/4", "0.75"),
    "non-terminating fraction": ("2/3", "2/3"),
    "latex fraction": ("\\dfrac{5}{2}", "2.5"),
    "negative latex fraction": ("-\\frac{1}{3}", "-1/3"),
    "dollar": ("$1,000.00", "1000"),
    "percent": ("50%", "50"),
    "braced thousands": ("10{,}000", "10000"),
    "float value": (2.5, "2.5"),
    "int value": (7, "7"),
    "words": ("five", None),
    "two numbers": ("1 2", None),
    "zero denominator": ("1/0", None),
    "empty": ("", None),
    "bool is not a number": (True, None),
}


@pytest.mark.parametrize("name", list(NUMBER_CASES))
def test_parse_number(name: str) -> None:
    text, expected = NUMBER_CASES[name]
    value = parse_number(text)
    assert (None if value is None else format_number(value)) == expected


def test_find_numbers() -> None:
    found = [format_number(x) for x in find_numbers("10-5=5, x = -3, 1,000 cost $2.50; \\frac{1}{2} of 3/4.")]
    assert found == ["10", "5", "5", "-3", "1000", "2.5", "0.5", "0.75"]


# -- gold parsing ------------------------------------------------------------------------------------------

GOLD_CASES = {
    "hashes with comma": ("He has 1000 + 234 = <<1000+234=1234>>1234.\n#### 1,234", "1234"),
    "negative": ("3 - 8 = -5\n#### -5", "-5"),
    "decimal": ("0.5 * 5 = 2.5\n#### 2.5", "2.5"),
    "fraction": ("1 - 1/4 = 3/4\n#### 3/4", "0.75"),
    "spaces after hashes": ("x\n####   18  ", "18"),
    "last hashes line wins": ("#### 3\nmore work\n#### 4", "4"),
    "bare number": ("42", "42"),
    "int value": (42, "42"),
}


@pytest.mark.parametrize("name", list(GOLD_CASES))
def test_gold(name: str) -> None:
    value, expected = GOLD_CASES[name]
    assert NumberAnswers().parse_gold(value) == expected


BAD_GOLD_CASES = {
    "no hashes line": "He has 5 apples.\nThen 6.",
    "words after hashes": "x\n#### five",
    "nothing after hashes": "x\n####",
    "two numbers": "x\n#### 5 or 6",
    "empty": "",
}


@pytest.mark.parametrize("name", list(BAD_GOLD_CASES))
def test_bad_gold(name: str) -> None:
    with pytest.raises(BadGold):
        NumberAnswers().parse_gold(BAD_GOLD_CASES[name])


def _all(t: GSM8KTask, seed: int = 0) -> dict[int, str]:
    return {int(p.id.rsplit(":", 1)[1]): p.answer for s in ("train", "test") for p in t.load(s, seed=seed)}


def test_gold_from_fixture() -> None:
    golds = _all(GSM8KTask(data=GSM_FILE))
    assert golds == {
        1: "1234",
        2: "-5",
        3: "2.5",
        4: "0.75",
        5: "18",
        6: "42",
        7: "420",
        8: "1300",
        9: "300",
        10: "6",
        11: "6",
        12: "10000",
    }


def test_parquet_and_split_directory(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rows = [json.loads(line) for line in GSM_FILE.read_text(encoding="utf-8").splitlines()]
    single = tmp_path / "gsm8k.parquet"
    pq.write_table(pa.Table.from_pylist(rows), single)
    assert sorted(_all(GSM8KTask(data=single)).values()) == sorted(_all(GSM8KTask(data=GSM_FILE)).values())
    # the hub layout: main/train-*.parquet and main/test-*.parquet -> official splits, no hashing
    (tmp_path / "hub" / "main").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:8]), tmp_path / "hub" / "main" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[8:]), tmp_path / "hub" / "main" / "test-00000-of-00001.parquet")
    t = GSM8KTask(data=tmp_path / "hub")
    test = t.load("test")
    assert sorted(p.answer for p in test) == sorted(["300", "6", "6", "10000"])
    assert t.load_info["official_splits"] is True
    assert len(t.load("train")) == 8
    assert all(p.meta["source"].endswith(f"row {i}") for i, p in enumerate(sorted(test, key=_row_no), 1))


def _row_no(p: Any) -> int:
    return int(p.meta["source"].rsplit(" ", 1)[1])


def test_mapping_source(tmp_path: Path) -> None:
    lines = GSM_FILE.read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:6]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(lines[6:]), encoding="utf-8")
    t = GSM8KTask(data={"train": tmp_path / "a.jsonl", "test": tmp_path / "b.jsonl"})
    assert sorted(p.answer for p in t.load("train")) == sorted(["1234", "-5", "2.5", "0.75", "18", "42"])
    assert {p.id for p in t.load("test")} == {f"test/b.jsonl:{i}" for i in range(1, 7)}


# -- splits ------------------------------------------------------------------------------------------------


def test_splits_disjoint_seeded_prefix_and_recorded() -> None:
    t = GSM8KTask(data=GSM_FILE)
    for seed in (0, 1, 2):
        train, test = t.load("train", seed=seed), t.load("test", seed=seed)
        assert len(train) + len(test) == 12
        assert not {p.question for p in train} & {p.question for p in test}
    test = t.load("test", seed=1)
    assert {p.split for p in test} == {"test"} and {p.split for p in t.load("train", seed=1)} == {"train"}
    assert t.loads["train"]["split"] == "train" and t.loads["test"]["split"] == "test"
    assert [p.id for p in t.load("test", seed=1)] == [p.id for p in test]
    assert [p.id for p in t.load("test", 2, seed=1)] == [p.id for p in test[:2]]
    assert t.load_info["split_seed"] == 1 and t.load_info["n"] == 2
    # the drawn problems' digest (what the manifest records) follows exactly what was drawn
    assert "problem_hashes" not in t.load_info
    assert problems_digest(t.load("test", 2, seed=1)) == problems_digest(test[:2]) != problems_digest(test)
    assert {p.id for p in t.load("test", seed=0)} != {p.id for p in t.load("test", seed=1)}


def test_asking_for_too_many_is_an_error() -> None:
    t = GSM8KTask(data=GSM_FILE)
    n = len(t.load("test"))
    with pytest.raises(MftError, match=f"only {n} test problems"):
        t.load("test", n + 1)


def test_duplicate_questions_are_dropped(tmp_path: Path) -> None:
    line = GSM_FILE.read_text(encoding="utf-8").splitlines()[0] + "\n"
    path = tmp_path / "dup.jsonl"
    path.write_text(line * 3, encoding="utf-8")
    t = GSM8KTask(data=path)
    problems = t.load("train") + t.load("test")
    assert len(problems) == 1


def test_prompt_is_du_et_al() -> None:
    p = GSM8KTask(data=GSM_FILE).load("test", 1)[0]
    prompt = lenient.question_prompt(p)
    assert prompt.startswith(
        f"Can you solve the following math problem? {p.question} Explain your reasoning."
    )
    assert "single numerical number, in the form \\boxed{answer}" in prompt


def test_bad_split_and_n() -> None:
    with pytest.raises(MftError, match="unknown split"):
        GSM8KTask(data=GSM_FILE).load("validation")
    with pytest.raises(MftError, match=">= 0"):
        GSM8KTask(data=GSM_FILE).load("test", -1)


# -- bad input ---------------------------------------------------------------------------------------------


def _write(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"question": "What is 2+2?", "answer": "2 + 2 = 4\n#### 4"})


def _error(path: Path, **kw: Any) -> str:
    with pytest.raises(MftError) as err:
        GSM8KTask(data=path, **kw).load("test")
    return str(err.value)


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, "", json.dumps({"question": "What is 3+3?", "solution": "6"})])
    msg = _error(path)
    assert str(path) in msg and "line 3" in msg and "'answer'" in msg and "solution" in msg


def test_missing_question_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"prompt": "hi", "answer": "#### 4"})])
    msg = _error(path)
    assert str(path) in msg and "line 1" in msg and "'question'" in msg


def test_unparseable_gold_names_file_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path, [GOOD, json.dumps({"question": "What is 3+3?", "answer": "three and three\n#### six"})]
    )
    msg = _error(path)
    assert str(path) in msg and "line 2" in msg and "'answer'" in msg and "six" in msg


def test_bad_gold_rows_can_be_skipped_and_are_counted(tmp_path: Path) -> None:
    bad = [json.dumps({"question": f"Question {i}?", "answer": "#### many"}) for i in range(6)]
    path = _write(tmp_path, [GOOD, *bad])
    t = GSM8KTask(data=path, skip_bad_gold=True)
    kept = t.load("train") + t.load("test")
    assert [p.answer for p in kept] == ["4"]
    skipped = 0
    for split in ("train", "test"):
        t.load(split)
        skipped += t.skipped
        assert t.skipped == len(t.skipped_rows) == t.load_info["skipped_bad_gold"]
        assert all(str(path) in where for where in t.skipped_rows)
    assert skipped == 6


def test_invalid_json_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, '{"question": "x", '])
    msg = _error(path)
    assert str(path) in msg and "line 2" in msg and "JSON" in msg


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, ["", "  "])
    msg = _error(path)
    assert str(path) in msg and "empty" in msg


def test_wrong_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    msg = _error(missing)
    assert str(missing) in msg and "does not exist" in msg


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = _write(tmp_path, ["question,answer"], name="data.csv")
    msg = _error(path)
    assert str(path) in msg and ".csv" in msg


def test_parquet_missing_field_names_row(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"question": "q1", "answer": "#### 1"}, {"question": "q2", "answer": None}]),
        path,
    )
    msg = _error(path)
    assert str(path) in msg and "row 2" in msg and "'answer'" in msg


# -- the hub -----------------------------------------------------------------------------------------------


def test_hub_official_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, config: str | None = None, split: str | None = None) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return [{"question": f"{split} q{i}", "answer": f"work\n#### {i},000"} for i in range(3)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    t = get_task("gsm8k")
    problems = t.load("train", 3)
    assert calls == [("openai/gsm8k", "main", "train")]
    assert sorted(p.id for p in problems) == ["train-main-0", "train-main-1", "train-main-2"]
    assert sorted(p.answer for p in problems) == ["0", "1000", "2000"]
    assert t.load_info["source"] == "hub:openai/gsm8k[main]"


def test_unreachable_hub_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(
            "Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail"
        )

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(MftError) as err:
        GSM8KTask().load("test")
    text = str(err.value)
    assert "openai/gsm8k" in text and "local" in text and "--data" in text and "\n" not in text
