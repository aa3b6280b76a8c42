"""One typed config tree for the whole pipeline, split by job:

- `schema`: the frozen dataclasses, one per section, whose field help is the CLI's --help;
- `loading`: YAML plus dotted overrides, type-checked into the tree;
- `env`: `${VAR}` expansion;
- `inputs`: checks of local inputs, before any compute;
- `help`: the --help reference.
"""

from raylane.config.env import expand_env
from raylane.config.help import describe
from raylane.config.inputs import check_data_inputs, check_model_input
from raylane.config.loading import apply_override, from_dict, load_config
from raylane.config.schema import (
    DEFAULT_MODEL,
    DataConfig,
    EvaluateConfig,
    GateConfig,
    ModelConfig,
    PipelineConfig,
    ResourcesConfig,
    SearchDim,
    ServeConfig,
    SliceConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
)
from raylane.errors import ConfigError
from raylane.locations import REMOTE_SCHEMES, resolve_input

__all__ = [
    "DEFAULT_MODEL",
    "REMOTE_SCHEMES",
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "GateConfig",
    "ModelConfig",
    "PipelineConfig",
    "ResourcesConfig",
    "SearchDim",
    "ServeConfig",
    "SliceConfig",
    "SweepConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_override",
    "check_data_inputs",
    "check_model_input",
    "describe",
    "expand_env",
    "from_dict",
    "load_config",
    "resolve_input",
]
