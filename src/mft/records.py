"""The records that flow between stages, and their JSONL persistence.

Artifacts are the interface between stages, so these classes are the project's file formats. JSONL files
are appended one finished record at a time and flushed (a killed run loses at most the record being
written); a torn last line -- the only damage a kill can do to an append -- is detected and dropped on read.
Whole files (`write_text_atomic`) and whole directories (`replace_dir_atomic`) are written under a temp name
beside their target and renamed into place, so a reader never sees one half-written.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from mft.errors import MftError
from mft.faults import checkpoint


class Problem(BaseModel):
    """One task instance. `answer` is the gold answer as a string (never used to build training data)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id, unique within a task and split.")
    question: str = Field(description="The problem statement shown to agents.")
    answer: str = Field(description="Gold answer, in the task's answer format.")
    split: str = Field("", description="'train' or 'test': the pool the problem was drawn from.")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Task-specific extras (operands, level...)."
    )


class Message(BaseModel):
    """One chat message, as sent to a chat template or an OpenAI-compatible API.

    `weight` is for training examples only: 0 keeps an assistant turn out of the loss (the fine-tuning API's
    chat format has the same field). It is written only where it is set, so every other file is unchanged.
    """

    role: str
    content: str
    weight: Literal[0, 1] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_weight(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("weight") is None:
            data.pop("weight", None)
        return data


# How a debate's later rounds ask the agents: update your own answer in the light of the others' (a debate,
# Du et al.), or work together towards one answer (cooperative, `Task.cooperative_prompt`).
Interaction = Literal["debate", "cooperative"]


class DebateRecord(BaseModel):
    """Everything one debate on one problem produced.

    Indexing is `[round][agent]`. `conversations[n]` is agent n's whole chat (what its critic later
    continues and trains on), `summaries[r][n]` the summary agent n was shown in round r+1 (if summarising).
    `bases[n]` is slot n's base model in a mixed society; it is written only there, and `interaction` only
    when it is cooperative, so every other file is unchanged.
    """

    task: str
    task_version: str
    problem: Problem
    agents: list[list[str]] = Field(description="Agent name per round per slot: agents[round][slot].")
    responses: list[list[str]]
    answers: list[list[str | None]]
    conversations: list[list[Message]]
    summaries: list[list[str]] = Field(default_factory=list)
    consensus: str | None = Field(description="Majority answer of the last round (None: nobody answered).")
    round_consensus: list[str | None] = Field(default_factory=list, description="Majority answer per round.")
    correct: bool = Field(
        description="Consensus equals gold (evaluation only; never used for training data)."
    )
    seed: int = 0
    bases: list[str] | None = Field(
        None, description="Base model per slot in a mixed society (None: one base model for all)."
    )
    interaction: Interaction = Field("debate", description="How later rounds were asked (`Interaction`).")

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("bases") is None:
            data.pop("bases", None)
        if data.get("interaction") == "debate":
            data.pop("interaction", None)
        return data

    @property
    def n_rounds(self) -> int:
        return len(self.responses)

    @property
    def n_agents(self) -> int:
        return len(self.responses[0]) if self.responses else 0


class Rationale(BaseModel):
    """STaR's rationalization of one wrong round-1 sample: the same agent asked again with the gold answer as
    a hint (`hinted_prompt`, kept for reading; training pairs the response with the prompt without it)."""

    problem_id: str
    slot: int = Field(description="The agent slot whose round-1 sample was wrong.")
    hinted_prompt: str
    response: str
    answer: str | None = Field(description="The answer the hinted response states (None: none).")


M = TypeVar("M", bound=BaseModel)


def append_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    """Append records, one JSON object per line, flushed and fsynced so a kill never loses a finished one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(rec.model_dump_json() + "\n" for rec in records)
    if not data:
        return
    with open(path, "a", encoding="utf-8") as fh:
        half = len(data) - len(data.rsplit("\n", 2)[-2]) // 2 - 1  # inside the last record
        fh.write(data[:half])
        fh.flush()
        checkpoint(f"append {path.name}")  # a kill here leaves a torn last line; read_jsonl repairs it
        fh.write(data[half:])
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path, model: type[M], *, repair: bool = True) -> list[M]:
    """Read a JSONL file of `model` records.

    A last line without its newline is a write torn by a kill: with `repair` it is cut off the file (so the
    next append starts clean) and ignored. Any other bad line is corruption and raises an MftError naming
    the file and line.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        if not repair:
            raise MftError(f"{path}: last line is incomplete (interrupted write)", hint="re-run to repair it")
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        raw = raw[:cut]
    out: list[M] = []
    # lines end at "\n" only: str.splitlines() would also cut at U+0085, U+2028 and the like, which a model's
    # reply may hold and a JSON string keeps raw
    for i, line in enumerate(raw.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            out.append(model.model_validate(json.loads(line)))
        except Exception as exc:  # noqa: BLE001 - turned into one clear message
            first = str(exc).splitlines()[0]
            raise MftError(
                f"{path}:{i}: not a valid {model.__name__} record ({first})",
                hint="delete that line (or the file) to redo the affected problems",
            ) from exc
    return out


def read_debates(path: Path) -> list[DebateRecord]:
    """The records of a debate file (`read_jsonl`), each problem once: a problem id that appears twice is
    refused, never trained on or counted twice (two writers at once, or an edited file, can cause it)."""
    records = read_jsonl(path, DebateRecord)
    seen: set[str] = set()
    for rec in records:
        if rec.problem.id in seen:
            raise MftError(
                f"{path}: problem id {rec.problem.id!r} appears twice",
                hint="delete that file to redo its debates (or delete the repeated line)",
            )
        seen.add(rec.problem.id)
    return records


def iter_jsonl_dicts(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write a whole JSON file through a temp name + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str | bytes, *, fault_point: bool = True) -> None:
    """The one whole-file writer: a temp name beside the target, then a rename, so readers never see half
    a file. The temp name is unique to the writing process and call (`<name>.<pid>.<random>.tmp`), so two
    writers of one file never collide on it. A failed write (full disk) removes its temp file; a kill leaves
    it, and the next write of the same file removes it (`_remove_stale_temps`). `fault_point=False` skips
    the fault-injection checkpoint (for writes whose timing is not deterministic, see `faults.py`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text, encoding="utf-8", newline="\n")
        if fault_point:
            checkpoint(f"write {path.name}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _remove_stale_temps(path)


@contextlib.contextmanager
def replace_dir_atomic(path: Path, *, fault_point: str | None = None) -> Iterator[Path]:
    """The one whole-directory writer: `with replace_dir_atomic(path) as tmp:` yields a new, empty temp
    directory beside `path` (named as `write_text_atomic` names its temp files) to fill; when the block ends
    without an error, it takes `path`'s place, so readers never see a half-written directory.

    What was at `path` is first renamed to another temp name, then the new directory is renamed to `path`,
    then the old one is removed. An error in the block (or at the fault point) removes the temp directory
    and leaves `path` as it was. A kill leaves `path` whole, old or new -- or, killed between the two
    renames, absent, which every caller reads as "not written yet" -- plus temp directories, which the next
    replace of `path` (or `remove_stale_temps_under`, when a run directory is locked) removes.
    `fault_point`: the label of the fault-injection checkpoint between writing and renaming (`faults.py`);
    None: no checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        if fault_point is not None:
            checkpoint(fault_point)
        if path.exists() or path.is_symlink():
            old = _temp_name(path)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # the old one goes back in place
                os.replace(old, path)
                old = None
            raise
    finally:
        _remove(tmp)
    if old is not None:
        _remove(old)
    _remove_stale_temps(path)


def _temp_name(path: Path) -> Path:
    """A temp name beside `path`, unique to this process and call: `<name>.<pid>.<random>.tmp`."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove(path: Path) -> None:
    """Remove a temp file or directory, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_TEMP = re.compile(r"(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def _stale(tmp: Path) -> bool:
    """Whether `tmp` is a temp file (or directory) of `write_text_atomic` (or `replace_dir_atomic`) whose
    writer is gone (killed mid-write)."""
    m = _TEMP.fullmatch(tmp.name)
    if not m or int(m["pid"]) == os.getpid():
        return False
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's process
        return False
    return False


def _remove_stale_temps(path: Path) -> None:
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        m = _TEMP.fullmatch(tmp.name)
        if m and m["name"] == path.name and _stale(tmp):
            _remove(tmp)


def remove_stale_temps_under(root: Path) -> None:
    """Remove every temp file and directory under `root` left by a killed writer (see `write_text_atomic`,
    `replace_dir_atomic`)."""
    for tmp in sorted(root.rglob("*.tmp")):  # a directory before what is inside it
        if tmp.exists() and _stale(tmp):
            _remove(tmp)


def problem_hashes(problems: Sequence[Problem]) -> dict[str, str]:
    """A short content hash (question and answer) per problem id: what a run records of each problem, so a
    resume can tell which problem of its data changed."""
    return {
        p.id: hashlib.sha256(json.dumps([p.question, p.answer], ensure_ascii=False).encode()).hexdigest()[:16]
        for p in problems
    }


def problems_digest(problems: Sequence[Problem]) -> str:
    """sha256 over the problems' (id, question, answer), in order: the one hash of the problems `mft debate`'s
    summary records (a run's manifest records a hash per problem instead, `problem_hashes`).

    Each problem is a JSON array on its own line, so no question text can make two lists hash alike.
    """
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p.id, p.question, p.answer], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
