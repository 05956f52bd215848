from alia_train.config.load import ConfigError, available_models, config_dir, load_config, to_yaml
from alia_train.config.schema import Config

__all__ = ["Config", "ConfigError", "available_models", "config_dir", "load_config", "to_yaml"]
