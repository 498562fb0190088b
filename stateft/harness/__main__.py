"""``python -m stateft.harness <lm-eval arguments>``: lm-eval's command line with ``--model stateft`` registered.

Bad input of ours (a missing adapter, an adapter of another model, an unknown model argument) ends with one
``error:`` line and exit code 2, as train.py and eval.py do.
"""

from __future__ import annotations

import sys


def main() -> None:
    from stateft.errors import UserError

    try:
        from lm_eval.__main__ import cli_evaluate

        import stateft.harness  # noqa: F401  (registers --model stateft)

        cli_evaluate()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
