"""thinksearch: distil long thinking and search-tool use into a small chat model.

Stages: ``synth`` (teacher → SFT rows), ``train`` (LoRA), ``ask``/``chat``/``serve``
(the agent loop with a real search tool) and ``eval`` (tag hit rates and more).
See README.md; ``thinksearch --help`` lists the commands.
"""

__version__ = "0.1.0"
