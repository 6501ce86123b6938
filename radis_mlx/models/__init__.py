"""Models: one loader for every stage (``loader``), the offline registry (``offline``), GGUF import (``gguf``)
and export (``gguf_export``), and adapters fused into the weights (``fuse``)."""

from .loader import Loaded, load, model_bytes, resolve, stored_config, to_float32
from .offline import (DEFAULT_MODEL, REGISTRY, OfflineModel, Part, conversion_for, converted_dir, default_gguf,
                      format_models, gguf_file, list_models, offline_model)

__all__ = ["DEFAULT_MODEL", "REGISTRY", "Loaded", "OfflineModel", "Part", "conversion_for", "converted_dir",
           "default_gguf", "format_models", "gguf_file", "list_models", "load", "model_bytes", "offline_model",
           "resolve", "stored_config", "to_float32"]
