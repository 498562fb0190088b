"""The application around the library: config checks, the training and evaluation runs, callbacks, loggers, sweeps.

Modules here import torch and Lightning only inside functions, so ``train.py --help`` and config errors stay fast.
"""
