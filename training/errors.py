"""What the training tooling refuses, shared by the converters (convert.py, trees.py)."""


class UnsupportedPipeline(ValueError):
    """The pipeline has a step (or a setting) the runtime cannot reproduce."""
