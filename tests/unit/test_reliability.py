"""Reliability, the parts cheap to check in-process: unique temp names, directory locks, duplicate
records, changed data on resume, custom ids, output directories, context limits, pool sizes, non-UTF-8 data,
`mft validate`, a model that cannot be loaded. The end-to-end halves are in tests/integration."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from mft import records
from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.cli import main
from mft.config import RunConfig
from mft.errors import MftError
from mft.manifest import write_or_check
from mft.methods import RATIONALIZING
from mft.records import DebateRecord, Message, Problem, append_jsonl, write_text_atomic
from mft.rundir import RunDir
from mft.tasks.arithmetic import ArithmeticTask
from mft.tasks.custom import CustomTask

pytestmark = pytest.mark.reliability


# -- 1. concurrent writers ---------------------------------------------------------------------------------


def test_temp_names_are_unique_per_writer_and_stale_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)  # a process that has exited: its temp file is stale
    stale = tmp_path / f"x.json.{dead_pid}.0badf00d.tmp"
    live = tmp_path / f"x.json.{os.getppid()}.0badf00d.tmp"  # a live writer's: kept
    stale.write_text("half")
    live.write_text("half")
    names: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        names.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(records.os, "replace", spy)
    write_text_atomic(target, "a")
    write_text_atomic(target, "b")
    assert target.read_text() == "b"
    assert len(set(names)) == 2 and all(f".{os.getpid()}." in n for n in names), names
    assert not stale.exists() and live.exists()


def _dir(path: Path, **files: str) -> None:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_directory_is_replaced_whole_and_an_error_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "agents" / "gen_0"
    with records.replace_dir_atomic(target) as tmp:  # a new directory (and its parent)
        assert tmp.parent == target.parent and tmp.is_dir() and not list(tmp.iterdir())
        assert not target.exists()  # nothing visible while it is written
        (tmp / "w").write_text("1")
    assert _tree(tmp_path) == {"agents/gen_0/w": "1"}
    with records.replace_dir_atomic(target) as tmp:  # an old one: replaced, not merged
        (tmp / "v").write_text("2")
        assert (target / "w").read_text() == "1"
    assert _tree(tmp_path) == {"agents/gen_0/v": "2"}
    with pytest.raises(RuntimeError), records.replace_dir_atomic(target) as tmp:
        (tmp / "v").write_text("half")
        raise RuntimeError("the save failed half-way")
    assert _tree(tmp_path) == {"agents/gen_0/v": "2"}  # the old one, and no temp directory left
    monkeypatch.setenv("MFT_FAULT", "enospc@1")  # the disk fills at the fault point, before the rename
    monkeypatch.setattr("mft.faults._count", 0)
    with pytest.raises(OSError, match="No space"), records.replace_dir_atomic(target, fault_point="x") as tmp:
        (tmp / "v").write_text("3")
    assert _tree(tmp_path) == {"agents/gen_0/v": "2"}
    monkeypatch.delenv("MFT_FAULT")
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:  # the rename of the new directory into place fails
        if Path(dst) == target and (Path(src) / "v").read_text() == "4":
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(records.os, "replace", failing)
    with pytest.raises(OSError, match="rename failed"), records.replace_dir_atomic(target) as tmp:
        (tmp / "v").write_text("4")
    assert _tree(tmp_path) == {"agents/gen_0/v": "2"}  # the old one is put back


def test_a_directory_write_killed_midway_leaves_the_old_one_and_its_temp_is_removed_later(
    tmp_path: Path,
) -> None:
    target = tmp_path / "run" / "gen_0"
    _dir(target, w="old")
    code = (
        "import sys; from pathlib import Path; from mft.records import replace_dir_atomic\n"
        "with replace_dir_atomic(Path(sys.argv[1]), fault_point='save') as tmp:\n"
        "    (tmp / 'w').write_text('new')\n"
    )
    env = {**os.environ, "MFT_FAULT": "kill@1"}  # SIGKILL at the fault point, before the rename
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p.name for p in target.parent.iterdir() if p.name != "gen_0"]
    assert (target / "w").read_text() == "old" and len(left) == 1 and left[0].endswith(".tmp")
    records.remove_stale_temps_under(tmp_path)  # as when the run directory is locked again
    assert _tree(tmp_path) == {"run/gen_0/w": "old"}
    subprocess.run([sys.executable, "-c", code, str(target)], env=env, capture_output=True)
    with records.replace_dir_atomic(target) as tmp:  # the next replace removes the killed one's temp too
        (tmp / "w").write_text("new")
    assert _tree(tmp_path) == {"run/gen_0/w": "new"}


_HOLD = (
    "import sys, time; from pathlib import Path; from mft.locks import lock_dir; "
    "lock_dir(Path(sys.argv[1]), 'output directory', '--out'); print('locked', flush=True); time.sleep(60)"
)


def test_a_locked_directory_is_refused_with_the_holders_pid_and_freed_by_kill_9(tmp_path: Path) -> None:
    from mft.locks import lock_dir

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t = time.time()
        with pytest.raises(MftError) as err:
            lock_dir(out, "output directory", "--out")
        assert time.time() - t < 1  # at once, no waiting
        msg = str(err.value)
        assert str(out) in msg and f"pid {holder.pid}" in msg and "fix:" in msg
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_dir(out, "output directory", "--out")  # the kernel freed it: a killed run resumes
    lock_dir(out, "output directory", "--out")  # this process holds it already: fine
    assert (out / ".lock").read_text().strip() == str(os.getpid())


def _record(pid: str) -> DebateRecord:
    problem = Problem(id=pid, question="1+1", answer="2", split="test")
    return DebateRecord(
        task="arithmetic",
        task_version="1",
        problem=problem,
        agents=[["a"]],
        responses=[["2"]],
        answers=[["2"]],
        conversations=[[Message(role="user", content="1+1")]],
        consensus="2",
        correct=True,
    )


def test_a_debate_file_holding_a_problem_twice_is_refused(tmp_path: Path) -> None:
    from mft.records import read_debates

    path = tmp_path / "debate.jsonl"
    append_jsonl(path, [_record("p1"), _record("p2"), _record("p1")])
    with pytest.raises(MftError) as err:
        read_debates(path)
    assert str(path) in str(err.value) and "'p1'" in str(err.value) and "fix:" in str(err.value)


# -- 2. changed data on resume -----------------------------------------------------------------------------


def _cfg(tmp_path: Path) -> RunConfig:
    return RunConfig(name="r", runs_dir=tmp_path, n_train=3, n_test=3, iterations=1)


def test_resume_refuses_problems_that_changed_and_names_one(tmp_path: Path) -> None:
    cfg, task = _cfg(tmp_path), ArithmeticTask()
    train, test = task.load("train", 3), task.load("test", 3)
    rd = RunDir(cfg.run_dir)
    write_or_check(rd.path, cfg, train, test, task, rationalizing=RATIONALIZING)
    write_or_check(rd.path, cfg, train, test, task, rationalizing=RATIONALIZING)  # the same problems: resumes
    edited = [*train[:1], train[1].model_copy(update={"answer": "12345"}), *train[2:]]
    with pytest.raises(MftError) as err:
        write_or_check(rd.path, cfg, edited, test, task, rationalizing=RATIONALIZING)
    msg = str(err.value)
    assert f"train problem {train[1].id!r} changed" in msg and "--name" in msg
    # a run of an older version, with a digest per split beside the hashes: resumes, checked by the hashes
    manifest = json.loads(rd.manifest.read_text())
    rd.manifest.write_text(json.dumps({**manifest, "problems": {"train": "0" * 64, "test": "1" * 64}}))
    write_or_check(rd.path, cfg, train, test, task, rationalizing=RATIONALIZING)
    with pytest.raises(MftError, match="changed"):
        write_or_check(rd.path, cfg, edited, test, task, rationalizing=RATIONALIZING)
    # a run made before the hashes were recorded still resumes
    del manifest["problem_hashes"]
    rd.manifest.write_text(json.dumps(manifest))
    write_or_check(rd.path, cfg, edited, test, task, rationalizing=RATIONALIZING)


def _rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_custom_ids_survive_an_edit_elsewhere_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"question": f"What is {i} plus one?", "answer": i + 1} for i in range(12)]
    _rows(path, rows)

    def ids() -> dict[str, str]:
        return {p.question: p.id for s in ("train", "test") for p in CustomTask(path).load(s)}

    before = ids()
    _rows(path, [{"question": "A new first row?", "answer": 0}, *rows[:5], *rows[6:]])  # one added, one gone
    after = ids()
    assert all(after[q] == before[q] for q in after if q in before)
    assert CustomTask(path).version.startswith("2-")  # ids changed from file:line: the version says so


def test_an_id_in_both_pools_or_both_splits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"id": "same" if i in (0, 1) else str(i), "question": f"q {i}?", "answer": i} for i in range(12)]
    _rows(path, rows)
    with pytest.raises(MftError, match=r"problem id 'same' repeats"):
        CustomTask(path, id_field="id").load("train")  # whichever pools its two rows fall in
    split = tmp_path / "split"
    split.mkdir()
    _rows(
        split / "train.jsonl",
        [{"id": "x", "question": "a?", "answer": 1}, {"id": "y", "question": "b?", "answer": 2}],
    )
    _rows(
        split / "test.jsonl",
        [{"id": "z", "question": "c?", "answer": 3}, {"id": "x", "question": "d?", "answer": 4}],
    )
    for s in ("train", "test"):
        with pytest.raises(MftError, match=r"problem id 'x' is also in the (train|test) split"):
            CustomTask(split, id_field="id").load(s)
    assert len(CustomTask(split).load("train")) == 2  # default ids name their file: never shared


# -- 3. one line instead of a traceback --------------------------------------------------------------------


def test_an_output_directory_that_is_a_file_or_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mft.locks import make_dir

    file = tmp_path / "runs"
    file.write_text("not a directory")
    with pytest.raises(MftError, match=r"is a file, not a directory \(fix: choose another directory"):
        make_dir(file, "run directory", "--runs-dir")
    with pytest.raises(MftError, match=rf"is under {file}, which is a file"):
        make_dir(file / "name", "run directory", "--runs-dir")

    def denied(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(MftError, match=r"cannot create run directory .*Permission denied.*you can write to"):
        make_dir(tmp_path / "new", "run directory", "--runs-dir")


class _Context:
    name = "ctx"

    def context_length(self) -> int:
        return 1024

    def describe(self) -> dict[str, str]:
        return {"model": "toy"}


def test_max_new_tokens_is_checked_against_the_models_context() -> None:
    from mft.pipeline.stages import check_max_new_tokens

    check_max_new_tokens(_Context(), 512)  # type: ignore[arg-type]
    with pytest.raises(MftError, match=r"max_new_tokens 100000000 .* model 'toy' \(1024 tokens"):
        check_max_new_tokens(_Context(), 100_000_000)  # type: ignore[arg-type]


def test_hf_generate_never_asks_for_more_tokens_than_the_context_holds() -> None:
    from mft.backends.hf import HFBackend

    backend = HFBackend("bundled", batch_size=4)
    context = backend.context_length()
    assert context == 1024
    backend.add_agent(Agent("a"))

    def tokens(request: GenerationRequest) -> int:
        return len(backend.tokenizer.encode(backend.render(request), add_special_tokens=False))

    per = tokens(GenerationRequest("a", [Message(role="user", content="1+2 " * 20)])) - tokens(
        GenerationRequest("a", [Message(role="user", content="1+2 " * 10)])
    )
    fill = "1+2 " * (10 * (context - 30) // per - 10)
    request = GenerationRequest("a", [Message(role="user", content=fill)])
    prompt = tokens(request)
    assert context - 100 < prompt < context, prompt
    backend.generate([request], Sampling(temperature=0, max_new_tokens=500))
    assert backend.stats.completion_tokens <= context - prompt
    too_long = GenerationRequest("a", [Message(role="user", content="1+2 " * context)])
    with pytest.raises(MftError, match=r"agent 'a': a prompt of \d+ tokens does not fit .* \(1024 tokens\)"):
        backend.generate([too_long], Sampling(max_new_tokens=8))


def test_more_problems_than_the_arithmetic_pool_holds_is_refused_at_once() -> None:
    from mft.tasks.base import load_split

    t = time.time()
    with pytest.raises(MftError) as err:
        load_split(ArithmeticTask(), "train", 10**9, 0, "--n-train")
    assert time.time() - t < 1
    assert str(err.value).startswith("--n-train 1,000,000,000 is more than the train pool")
    assert "use --n-train 363,500,000 or fewer" in str(err.value)


# -- 4. smaller items --------------------------------------------------------------------------------------


def test_a_data_file_that_is_not_utf8_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "ok?", "answer": 1}\n{"question": "caf\xe9?", "answer": 2}\n')
    copy = tmp_path / "latin1.json"
    copy.write_bytes(b'[{"question": "ok?", "answer": 1},\n {"question": "caf\xe9?", "answer": 2}]\n')
    for p in (path, copy):
        with pytest.raises(MftError) as err:
            CustomTask(p).load("test")
        assert f"{p}, line 2: not UTF-8" in str(err.value) and "save the file as UTF-8" in str(err.value)


def test_validate_reports_every_file_and_only_the_misspelt_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\niteratons: 2\nn_train: 4\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: -1\n")
    good = tmp_path / "good.yaml"
    good.write_text("name: y\niterations: 1\n")
    assert main(["validate", str(typo), str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0] == (
        f"mft: error: {typo}: field 'iteratons': unknown setting (did you mean 'iterations'?)"
    ), lines[0]
    assert str(bad) in lines[1] and "'agents'" in lines[1]
    assert f"{good}: ok (run config)" in out


def test_a_model_that_cannot_be_loaded_is_one_line_without_library_chatter(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import transformers

    from mft.backends.hf.model import load_base

    def offline(*args: Any, **kwargs: Any) -> Any:
        for _ in range(5):
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
            logging.getLogger("transformers.utils.hub").warning("could not reach the hub")
            warnings.warn("offline mode", UserWarning, stacklevel=1)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    monkeypatch.setattr("mft.backends.hf.model.loadable", lambda model: model)  # as if the hub answered
    with pytest.raises(MftError) as err:
        load_base("nonexistent-org/nonexistent-model")
    msg = str(err.value)
    assert "'nonexistent-org/nonexistent-model'" in msg and "not a local directory" in msg and "fix:" in msg
    out, errout = capfd.readouterr()
    assert out == "" and errout == "", errout
