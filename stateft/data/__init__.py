"""Benchmark DataModules on a shared text-to-text base, and scoring of predictions files."""

from stateft.data.base import TextToTextDataModule
from stateft.data.predictions import read_predictions, score_predictions_file, write_predictions
from stateft.data.task import Example, Task

__all__ = ["Example", "Task", "TextToTextDataModule", "read_predictions", "score_predictions_file", "write_predictions"]
