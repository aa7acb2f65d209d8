"""A config class's fields as command-line flags: one `--flag` per field, with its description as help,
grouped in `--help` by the sections below (`SECTIONS`, in this order)."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

# The groups of settings in `--help` (and in docs), in this order. Every field of every config class is in
# exactly one group (a test checks it), so a new setting cannot go unlisted.
SECTIONS: dict[str, tuple[str, ...]] = {
    "task and data": ("task", "data", "task_options", "split", "limit", "n_train", "n_test"),
    "model and backend": (
        "model", "summarizer_model", "backend", "batch_size", "backend_options", "chat_template_kwargs",
    ),
    "society and debate": ("agents", "rounds", "summarize", "interaction", "chunk_size"),
    "sampling": ("temperature", "method_temperatures", "top_p", "max_new_tokens"),
    "seeds": ("seed", "split_seed"),
    "method": (
        "method", "iterations", "critic_corrected_share", "critic_mask_first_answer", "star_rationalize",
        "min_examples",
    ),
    "finetuning": (
        "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "ft_epochs", "ft_lr", "ft_batch_size",
        "ft_group_by_length", "ft_precision", "ft_method", "ft_micro_batch_size", "ft_gradient_checkpointing",
        "ft_max_length", "ft_warmup_ratio", "ft_lr_schedule",
    ),
    "objectives (DPO, GRPO)": (
        "ft_objective_generator", "ft_objective_critic", "dpo_beta", "grpo_group", "grpo_loss", "grpo_beta",
        "grpo_epsilon", "grpo_updates", "grpo_reference", "grpo_format_reward",
    ),
    "diversity metrics": ("diversity_problems", "embedding_model"),
    "executor": ("executor", "ray_address", "ray_workers", "ray_num_cpus", "ray_num_gpus"),
    "output": ("out", "name", "runs_dir", "report_to"),
}  # fmt: skip


def section_of(field: str) -> str:
    return next(title for title, fields in SECTIONS.items() if field in fields)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[BaseModel]) -> None:
    """One `--flag` per config field, grouped by section, with the field's description as help; unset
    flags stay None (so a YAML file's value is kept)."""
    groups = {title: parser.add_argument_group(f"{title} settings") for title in SECTIONS}
    fields = sorted(cls.model_fields.items(), key=lambda kv: list(SECTIONS).index(section_of(kv[0])))
    for name, info in fields:
        group = groups[section_of(name)]
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        default = info.get_default(call_default_factory=True)
        if typing.get_origin(annotation) is dict:
            help_text = f"{info.description} On the command line: KEY=VALUE[,KEY=VALUE...], each VALUE "
            help_text += "read as YAML (1.5, true, [4, 5]); it replaces the config file's whole mapping."
            group.add_argument(
                flag, dest=name, default=None, type=parse_mapping, metavar="KEY=VALUE,...",
                help=help_text.replace("%", "%%"),
            )  # fmt: skip
            continue
        if isinstance(default, list):
            default = ",".join(map(str, default))
        if isinstance(default, float) and len(str(default)) > 8:  # 2/3 as 0.6667, not 0.6666666666666666
            default = f"{default:.4g}"
        # argparse formats help with %: a literal one ("30% slower") must be doubled
        help_text = f"{info.description} (default: {default})".replace("%", "%%")
        if annotation is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        choices = _literal_choices(annotation)
        if choices:
            kwargs["choices"] = choices
        kwargs["type"] = _scalar_type(annotation)
        group.add_argument(flag, **kwargs)


def parse_mapping(text: str) -> dict[str, Any]:
    """A mapping setting given as a flag: `single_ft=2.0,ours=1.0` -> {"single_ft": 2.0, "ours": 1.0}, each
    value read as YAML (a comma inside [...] stays in its value); the field's own validator then checks the
    keys and values. A malformed item is argparse's one-line error, naming the flag."""
    import re

    import yaml

    out: dict[str, Any] = {}
    # a comma starts a new item only before KEY=, so a YAML list stays whole: levels=[4,5],strict=true
    for item in filter(None, (part.strip() for part in re.split(r",(?=\s*[\w.-]+\s*=)", text))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE (e.g. single_ft=2.0)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            bad = f"the value of {key.strip()!r} is not YAML (write it in a config file instead)"
            raise argparse.ArgumentTypeError(bad) from None
    return out


def _literal_choices(annotation: Any) -> list[Any] | None:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return None


def _scalar_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is list:
        return str  # a comma-separated list on the command line, split by the field's validator
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0])
    if origin is Literal:
        return type(typing.get_args(annotation)[0])
    return str if annotation is Path else annotation
