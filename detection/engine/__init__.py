"""The engine: training loop, checkpoints, distributed set-up, inference over datasets, and the tasks.

Owns what the tools need from a model family (``Task``, registered in ``TASKS`` by MODEL.META_ARCHITECTURE) and
the loop around it. May import every other package; nothing but ``tools/`` and the Python API (``api.py``) imports
it.

Importing this package registers the built-in tasks (detection_task.py, classification_task.py).
"""

from . import classification_task, detection_task  # noqa: F401  (register the tasks)
from .tasks import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
