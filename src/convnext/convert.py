"""Moved: `convnext.convert` is now `convnext.checkpoints.convert`. This alias is kept for one release."""
import sys
import warnings

from .checkpoints import convert as _moved

warnings.warn("convnext.convert moved to convnext.checkpoints.convert; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
