"""TensorFlow's import noise on stderr, muted for the commands that only read models (show, run).

Its C++ start-up lines (oneDNN, CUDA probing, ``absl::InitializeLog``) go straight to fd 2 before
``TF_CPP_MIN_LOG_LEVEL`` or Python logging can apply. ``mlsrv serve`` keeps them, once each
(``server/tf_startup_log.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


def quiet_tensorflow() -> None:
    """Keep TF's C++ log lines off the terminal; must run before TensorFlow is first imported.

    Level 3 mutes ERROR lines too: on a machine without a GPU, TF logs ``E0000 ... failed call to cuInit``
    when the first session starts. A TF failure that matters still reaches the user, as the Python
    exception mlsrv prints as its one-line error. A TF_CPP_MIN_LOG_LEVEL the user set is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def tensorflow_import_muted() -> Iterator[None]:
    """Mute fd 2 while TensorFlow is first imported: its CUDA probing prints before TF_CPP_MIN_LOG_LEVEL applies.

    Python exceptions still surface (they are printed after the block); later TF errors are not hidden.
    """
    from mlsrv.server.tf_startup_log import captured_tensorflow_import

    quiet_tensorflow()
    with captured_tensorflow_import(echo_once=False):
        yield
