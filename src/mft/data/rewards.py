"""GRPO's reward: agreement with the society's consensus, read by the task's own scoring (no ground truth).

A reply earns 1 when the answer the task reads from it is equivalent to the debate's consensus on its
problem, by the one extract + equivalence that consensus, data filtering and evaluation use; 0 otherwise (no
answer read is never a match). An optional format term adds `format_reward` to any reply from which an
answer can be read at all. Picklable (a task and a number), so a Ray finetune task gets it with its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from mft.tasks.base import Task


@dataclass(frozen=True)
class ConsensusReward:
    task: Task
    format_reward: float = 0.0

    def __call__(self, replies: list[str], consensus: list[str]) -> list[float]:
        """Each reply's reward against the consensus of its problem (the same position in `consensus`)."""
        if len(replies) != len(consensus):
            raise ValueError(f"{len(replies)} replies but {len(consensus)} consensus answers")
        out = []
        for reply, agreed in zip(replies, consensus, strict=True):
            answer = self.task.extract_answer(reply)
            right = answer is not None and self.task.is_equivalent(answer, agreed)
            out.append(float(right) + (self.format_reward if answer is not None else 0.0))
        return out
