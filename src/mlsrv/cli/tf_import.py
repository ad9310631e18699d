"""TensorFlow's import noise on stderr: muted for commands that only read models, printed once for serve.

Its C++ start-up lines (oneDNN, CUDA probing, ``absl::InitializeLog``) go straight to fd 2 before
``TF_CPP_MIN_LOG_LEVEL`` or Python logging can apply, and TensorFlow 2.21 prints them twice on
``import tensorflow`` (two of its shared libraries each initialise the runtime and log).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
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
    quiet_tensorflow()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured stderr (tests): nothing to mute
        fd = -1
    if fd < 0 or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def tensorflow_import_deduplicated() -> Iterator[None]:
    """Capture fd 2 while TensorFlow is first imported and write each of its lines once, in order.

    For ``mlsrv serve``, whose log keeps TF's start-up lines as TF Serving's does. A temporary file, not
    a pipe, holds them: a pipe that nobody reads while the import runs could fill and block it.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured stderr (tests): nothing to rewrite
        fd = -1
    if fd < 0 or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            seen: set[bytes] = set()
            for line in captured.read().splitlines(keepends=True):
                key = line.split(b"] ", 1)[-1] if line.startswith((b"I0000", b"W0000", b"E0000")) else line
                if key not in seen:  # the same message again, with another timestamp: printed once
                    seen.add(key)
                    os.write(fd, line)
