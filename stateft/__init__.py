"""stateft: parameter-efficient fine-tuning of Mamba state space models (State-offset Tuning and its baselines)."""

__version__ = "0.1.0"
