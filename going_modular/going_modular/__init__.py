"""The course's import path, `from going_modular.going_modular import data_setup, engine`.

The course ships its scripts as a folder inside a folder (`going_modular/going_modular/*.py`), so
lesson 09 imports them from there. Here they are the same modules as `going_modular.<name>`, not
copies: `going_modular.going_modular.engine is going_modular.engine`, and
`import going_modular.going_modular.engine` works too.
"""
import importlib
import sys

COURSE_MODULES = ("data_setup", "engine", "model_builder", "predictions", "utils")

for _name in COURSE_MODULES:
    _module = importlib.import_module(f"going_modular.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module  # so `import going_modular.going_modular.<name>` finds it
    globals()[_name] = _module

__all__ = list(COURSE_MODULES)
