"""Which batching options a model version gets, following TF Serving's precedence.

* ``--enable_per_model_batching_parameters``: each version's own ``batching_params.pbtxt``; a version
  without the file is not batched (TF Serving's behaviour); the global file still applies its limits.
* a ``batching`` table on a ``[[models]]`` entry in ``mlsrv.toml``: that model's options.
* otherwise ``--enable_batching`` with ``--batching_parameters_file`` (or the TOML ``[batching]``
  table, or TF's defaults) for every model.
Options are parsed once per model or version and cached. A bad per-model file fails the load of its
version (:func:`check_per_model_file`, run by the Server's loader), as in TF Serving.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Final

from mlsrv.batching_params import BatchingOptions, load_batching_parameters
from mlsrv.config import ModelConfig, ServerConfig
from mlsrv.errors import ConfigError
from mlsrv.server.ids import ServableId

log = logging.getLogger(__name__)

PER_MODEL_FILE: Final = "batching_params.pbtxt"


def global_options(config: ServerConfig) -> BatchingOptions | None:
    """The server-wide options, or None when batching is off. Raises ConfigError at startup."""
    if not config.enable_batching:
        return None
    if config.batching_parameters_file:
        return load_batching_parameters(config.batching_parameters_file)
    if config.batching_toml:
        return BatchingOptions.from_mapping(config.batching_toml, source="[batching]")
    return BatchingOptions()


def wants_batching(config: ServerConfig) -> bool:
    return config.enable_batching or any(m.batching for m in config.models)


class BatchingChoice:
    """``__call__(servable_id) -> BatchingOptions | None``; the BatchingPool's ``options_for``."""

    def __init__(
        self,
        config: ServerConfig,
        models: Callable[[], Mapping[str, ModelConfig]],
        version_path: Callable[[ServableId], str | None],
    ) -> None:
        self._global = global_options(config)
        self._per_model_files = config.per_model_batching
        self._models = models
        self._version_path = version_path
        self._cache: dict[object, BatchingOptions | None] = {}

    def __call__(self, servable_id: ServableId) -> BatchingOptions | None:
        model = self._models().get(servable_id.name)
        if self._per_model_files:
            return self._cached(servable_id, lambda: self._from_file(servable_id))
        if model is not None and model.batching:
            table = model.batching
            return self._cached(model.name, lambda: BatchingOptions.from_mapping(
                table, source=f"models[{model.name}].batching"))
        return self._global

    def _cached(self, key: object, build: Callable[[], BatchingOptions | None]) -> BatchingOptions | None:
        if key not in self._cache:
            try:
                self._cache[key] = build()
            except ConfigError as error:
                log.error("batching disabled for %s: %s", key, error.message)
                self._cache[key] = None
        return self._cache[key]

    def _from_file(self, servable_id: ServableId) -> BatchingOptions | None:
        path = self._version_path(servable_id)
        return check_per_model_file(path) if path else None


def check_per_model_file(version_path: str) -> BatchingOptions | None:
    """The version's ``batching_params.pbtxt`` options, None without the file; ConfigError if it is bad."""
    candidate = os.path.join(version_path, PER_MODEL_FILE)
    if not os.path.isfile(candidate):
        return None
    return load_batching_parameters(candidate)
