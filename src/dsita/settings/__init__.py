"""The settings of the edge (the CLI and `dsita run`): one typed object, where each value came from, and
its translation into the options dataclasses the library takes.

Library packages never import this: they take options. Precedence, highest first: command-line flags,
environment variables, the env file (`--env-file`), the defaults.
"""

from dsita.settings.model import PRESETS, LmEvaluateRange, Settings, parse_flag
from dsita.settings.sources import Source, load_settings

__all__ = ["PRESETS", "LmEvaluateRange", "Settings", "Source", "load_settings", "parse_flag"]
