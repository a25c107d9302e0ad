"""The predictor's error type."""

from __future__ import annotations

__all__ = ["PredictorError"]


class PredictorError(ValueError):
    """A predictor directory, configuration or label file that cannot be used.

    The message names the file or setting and, for mismatches, the expected and found values.
    """
