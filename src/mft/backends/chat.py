"""A model's chat format: how its template renders prompts, where its turns end, and which tokens to train on.

Three things a real chat model gets wrong if handled naively, all answered here in one place for generation,
scoring and training alike:

- **Stop ids.** Instruction models end a turn with a token that is often not the tokenizer's eos
  (`<|eot_id|>`, `<|end|>`, `<end_of_turn>`, `<|im_end|>`); their `generation_config.eos_token_id` lists
  every token that ends generation. `stop_ids` is all of those plus the tokenizer's eos. Generation stops on
  any of them and the stop token is not part of the response text.
- **Assistant-only labels.** A template that renders a turn differently once later turns exist (Qwen3 drops
  earlier reasoning, Phi-3 ends a lone chat with eos) breaks the usual "difference of two renderings" trick:
  the next turn's header ends up under the loss. `training_ids` uses a template with `{% generation %}`
  markers (the model's own, or TRL's training version of a known template, as TRL's SFT does) and the mask
  `transformers` derives from them; otherwise it checks every assistant turn's prefix and clamps the span at
  the turn's stop token, and refuses (one clear error) rather than mislabel.
- **Template options.** `template_kwargs` (e.g. Qwen3's `enable_thinking`) are passed to every rendering; a
  template that prints today's date (Llama 3.x) gets a pinned date, so a record never depends on the day it
  was written (resume and determinism rely on identical prompts).
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any

from mft.errors import MftError
from mft.records import Message

# Llama 3.x's own fallback date ("26 Jul 2024"), used for every template that prints the date.
PINNED_DATE = datetime.date(2024, 7, 26)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def stop_ids(tokenizer: Any, generation_config: Any = None) -> tuple[int, ...]:
    """Every token id that ends a turn: generation_config.eos_token_id (one or a list), tokenizer's eos."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos is not None:
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return tuple(sorted(ids))


# Prepended to a template that prints today's date: a macro of the same name shadows transformers' global
# `strftime_now` inside the template (a callable cannot be passed as a rendering variable) and writes
# PINNED_DATE in the format asked for (the common strftime codes).
_CODES = {
    "%d": "%d",
    "%-d": "%-d",
    "%b": "%b",
    "%B": "%B",
    "%m": "%m",
    "%Y": "%Y",
    "%y": "%y",
    "%A": "%A",
    "%a": "%a",
}
_PINNED_MACRO = (
    "{%- macro strftime_now(fmt) -%}{{ fmt"
    + "".join(f" | replace('{code}', '{PINNED_DATE.strftime(code)}')" for code in _CODES)
    + " }}{%- endmacro -%}"
)


def pin_date(template: str) -> str:
    """`template` with today's date replaced by PINNED_DATE (unchanged if it prints no date)."""
    return _PINNED_MACRO + template if "strftime_now" in template else template


class ChatFormat:
    """The chat format of one tokenizer (and its model's generation config), with template options."""

    def __init__(
        self, tokenizer: Any, generation_config: Any = None, template_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        template = tokenizer.chat_template
        if template is None:
            raise MftError(
                f"tokenizer {tokenizer.name_or_path!r} has no chat template",
                hint="use an instruction-tuned model, or give the tokenizer a chat template",
            )
        # a template shipped as named variants: its `default` is the one that renders chats
        template = template["default"] if isinstance(template, dict) else template
        self.template_kwargs = dict(template_kwargs or {})
        self.template: str = pin_date(template)
        self.stop_ids = stop_ids(tokenizer, generation_config)
        self._training: str | None | bool = False  # False: not looked up yet

    # -- rendering ------------------------------------------------------------------------------------------
    def render(self, messages: list[Message], generation_prompt: bool, template: str | None = None) -> str:
        text: str = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=template or self.template,
            **self.template_kwargs,
        )
        return text

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt(self, messages: list[Message]) -> str:
        """The prompt of the next assistant turn: the chat rendered with the generation prompt."""
        return self.render(messages, generation_prompt=True)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return self.ids(self.prompt(messages))

    def until_stop(self, token_ids: list[int]) -> tuple[list[int], bool]:
        """The generated tokens before the first stop id, and whether there was one."""
        for i, t in enumerate(token_ids):
            if t in self.stop_ids:
                return token_ids[:i], True
        return token_ids, False

    def reply_ids(self, prompt: list[Message], response: str) -> tuple[list[int], int]:
        """Ids of `prompt` + `response` as the assistant's reply, and how many tokens the reply has: the
        tokens generation would produce, its stop token included and anything the template adds after it
        not."""
        start = self.prompt_ids(prompt)
        full = self.ids(self.render([*prompt, Message(role="assistant", content=response)], False))
        if full[: len(start)] != start:
            raise self._not_prefix_preserving()
        reply = full[len(start) :]
        for i, t in enumerate(reply):
            if t in self.stop_ids:
                reply = reply[: i + 1]
                break
        if not reply:
            raise MftError(f"the chat template renders an empty reply for {response!r}")
        return start + reply, len(reply)

    # -- training labels ------------------------------------------------------------------------------------
    def training_template(self) -> str | None:
        """A template with `{% generation %}` markers for this model: its own, TRL's training version of a
        known template, or None (then `training_ids` checks prefixes instead)."""
        if self._training is False:
            self._training = None
            if _GENERATION_TAG.search(self.template):
                self._training = self.template
            else:
                try:
                    from trl.chat_template_utils import get_training_chat_template
                except ImportError:  # pragma: no cover - trl is a dependency
                    get_training_chat_template = None
                if get_training_chat_template is not None:
                    try:
                        found = get_training_chat_template(self.tokenizer)
                    except ValueError:  # a template TRL does not know
                        found = None
                    else:
                        self._training = pin_date(found) if found else self.template
        return self._training if isinstance(self._training, str) else None

    def training_ids(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        """Ids of the whole chat and labels that are -100 except on the assistant turns (their content and
        end-of-turn token; whitespace a training template keeps after it may be included). An assistant
        turn with `weight` 0 is left out of the labels (context only)."""
        template = self.training_template()
        if template is not None:
            out = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
                chat_template=template,
                **self.template_kwargs,
            )
            ids = list(out["input_ids"])
            mask = list(out["assistant_masks"])
            if any(m.role == "assistant" and m.content for m in messages) and not any(mask):
                raise MftError(f"the training chat template of {self._name()} marks no assistant token")
            if any(m.weight == 0 for m in messages):
                mask = self._unweighted(messages, mask)
            return ids, [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        return self._labels_by_prefix(messages)

    def _unweighted(self, messages: list[Message], mask: list[int]) -> list[int]:
        """The template's assistant mask without the turns of weight 0: its runs of marked tokens are the
        assistant turns with content, in order (refused where they are not, rather than mislabelled)."""
        runs: list[tuple[int, int]] = []
        for i, m in enumerate(mask):
            if m and (i == 0 or not mask[i - 1]):
                runs.append((i, i + 1))
            elif m:
                runs[-1] = (runs[-1][0], i + 1)
        turns = [m for m in messages if m.role == "assistant" and m.content]
        if len(runs) != len(turns):
            raise MftError(
                f"the training chat template of {self._name()} marks {len(runs)} assistant spans for "
                f"{len(turns)} assistant turns, so a turn of weight 0 cannot be left out of the loss",
                hint="train on every turn (critic_mask_first_answer: false)",
            )
        out = list(mask)
        for (start, end), turn in zip(runs, turns, strict=True):
            if turn.weight == 0:
                out[start:end] = [0] * (end - start)
        return out

    def _labels_by_prefix(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        full = self.ids(self.render(messages, False))
        labels = [-100] * len(full)
        for i, m in enumerate(messages):
            if m.role != "assistant" or m.weight == 0:
                continue
            prefix = self.prompt_ids(messages[:i])
            start = len(prefix)
            if prefix != full[:start]:
                raise self._not_prefix_preserving()
            # where the chat ending at this turn stops agreeing with the whole chat, the next turn begins
            alone = self.ids(self.render(messages[: i + 1], False))
            end = len(os.path.commonprefix([full, alone]))
            for j in range(start, end):  # the turn's stop token closes it
                if full[j] in self.stop_ids:
                    end = j + 1
                    break
            if end <= start:  # the whole chat renders this turn otherwise than the chat that ends with it
                raise self._not_prefix_preserving()
            labels[start:end] = full[start:end]
        return full, labels

    def _name(self) -> str:
        return f"model {self.tokenizer.name_or_path!r}"

    def _not_prefix_preserving(self) -> MftError:
        return MftError(
            f"the chat template of {self._name()} renders earlier turns differently once later turns follow, "
            "so its assistant tokens cannot be found",
            hint="give the tokenizer a chat template with {% generation %} markers around assistant turns "
            "(TRL's training templates show how)",
        )
