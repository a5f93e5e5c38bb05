"""Moved: `convnext.model` is now `convnext.models.convnext`. This alias is kept for one release."""
import sys
import warnings

from .models import convnext as _moved

warnings.warn("convnext.model moved to convnext.models.convnext; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
