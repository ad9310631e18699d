"""Op libraries outside TensorFlow (TensorFlow Text, Decision Forests...): registered by importing them.

TF Serving links such op libraries into its binary, and a model that needs one it lacks fails with
``Op type not registered``: its users rebuild the server. In Python an op library registers its ops
when its package is imported, so mlsrv:

* imports the packages named by ``--load_op_packages`` (comma-separated module names, such as
  ``tensorflow_text``) before any model loads;
* and, when a load still fails with ``Op type not registered 'X'``, imports the installed package
  that provides X (by the op's namespace, ``TFText>...``, or else every known op package that is
  installed) and loads again, once;
* and otherwise fails the load with a message that names the op and the package to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from collections.abc import Iterable
from typing import Final

from mlsrv.errors import ConfigError

log = logging.getLogger(__name__)

#: Op libraries TF Serving builds into its binary or that its users ask for, by module -> pip name.
KNOWN_PACKAGES: Final = {
    "tensorflow_text": "tensorflow-text",
    "tensorflow_decision_forests": "tensorflow-decision-forests",
    "tensorflow_io": "tensorflow-io",
    "tensorflow_addons": "tensorflow-addons",
    "tensorflow_recommenders_addons": "tensorflow-recommenders-addons",
}
#: An op name's namespace (``TFText>WhitespaceTokenizeWithOffsetsV2``) -> the module that registers it.
NAMESPACES: Final = {"TFText": "tensorflow_text", "Addons": "tensorflow_addons", "IO": "tensorflow_io"}
_UNREGISTERED: Final = re.compile(r"Op type not registered '([^']+)'")


def import_packages(names: Iterable[str]) -> None:
    """``--load_op_packages``: import each module now; ``ConfigError`` (exit 2) if one cannot be."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # an op library may fail to load its .so with any error
            pip = KNOWN_PACKAGES.get(name, name.replace("_", "-"))
            raise ConfigError(f"--load_op_packages: cannot import {name} ({error}); pip install {pip}?") from None
        log.info("Loaded op package %s", name)


def unregistered_op(message: str) -> str | None:
    """The op name of an ``Op type not registered 'X'`` error, else None."""
    found = _UNREGISTERED.search(message)
    return found.group(1) if found else None


def register_for(op: str) -> list[str]:
    """Import the installed packages that may provide ``op``; the ones imported (empty: nothing to try)."""
    namespace = op.split(">", 1)[0] if ">" in op else ""
    candidates = [NAMESPACES[namespace]] if namespace in NAMESPACES else list(KNOWN_PACKAGES)
    imported = []
    for module in candidates:
        if importlib.util.find_spec(module) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as error:  # installed but broken (a TF version it was not built for)
            log.warning("Op package %s is installed but cannot be imported: %s", module, error)
            continue
        imported.append(module)
    if imported:
        log.info("Op %s is not in TensorFlow: imported %s, which register ops, and loading again",
                 op, ", ".join(imported))  # fmt: skip
    return imported


def advice(op: str) -> str:
    """What to do about an op no installed package provides."""
    namespace = op.split(">", 1)[0] if ">" in op else ""
    module = NAMESPACES.get(namespace)
    if module is not None:
        return f"install the package that provides it: pip install {KNOWN_PACKAGES[module]}"
    return (
        "install the Python package of the op library the model was built with (for example "
        "tensorflow-text or tensorflow-decision-forests) and, if mlsrv does not find it, name its module with "
        "--load_op_packages"
    )
