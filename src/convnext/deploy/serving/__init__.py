"""`convnext serve`: a prediction service with dynamic batching, Grad-CAM and a page.

images (decode with limits) → batcher (queue + one inference thread) → app (routes, errors, metrics)
"""
from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
