"""The tasks the training loop trains, by the name a run's config.json records."""
from .base import Task
from .classification import Classification
from .detection import Detection
from .fcmae import Pretraining
from .segmentation import Segmentation

TASKS: dict[str, type[Task]] = {task.name: task for task in (Classification, Pretraining, Detection, Segmentation)}
