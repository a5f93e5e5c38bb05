"""Moved: `convnext.inference` is now `convnext.deploy.inference`. This alias is kept for one release."""
import sys
import warnings

from .deploy import inference as _moved

warnings.warn("convnext.inference moved to convnext.deploy.inference; import it from there", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
