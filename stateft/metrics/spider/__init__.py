"""Spider metrics: hardness from a sqlglot parse, a hardened SQLite executor and execution match under the original
and the test-suite semantics. ``python -m stateft.metrics.spider`` scores a predictions file."""

from stateft.metrics.spider.evaluate import SpiderEvaluator, flat_scores, summarize
from stateft.metrics.spider.hardness import LEVELS, hardness
from stateft.metrics.spider.schema import Schema, load_schemas

__all__ = ["LEVELS", "Schema", "SpiderEvaluator", "flat_scores", "hardness", "load_schemas", "summarize"]
