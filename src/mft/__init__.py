"""mft: Multiagent Finetuning (Subramaniam et al., ICLR 2025).

`import mft` is cheap: it never imports torch, transformers or any backend. Heavy modules are imported
lazily by the code paths that need them.
"""

__version__ = "0.1.0"
