"""The ``mmfuse`` command line (thin: parses arguments and calls the public API)."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``mmfuse`` console script."""
    from mmfuse.cli._app import app

    app()
