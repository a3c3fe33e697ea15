"""The mmfuse version: the one place it is written (``pyproject.toml`` reads it from here).

Low layers import it from this module, never ``from mmfuse import __version__``, so that nothing below the
package's public surface depends on the package ``__init__``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
