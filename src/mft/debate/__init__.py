"""Multiagent debate: prompts come from the task, batching from the backend, voting from consensus."""
