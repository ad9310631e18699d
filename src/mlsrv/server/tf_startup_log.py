"""TensorFlow's C++ start-up lines: each once in ``mlsrv serve``'s log, none for the model commands.

They (oneDNN, CUDA probing, ``absl::InitializeLog``) go straight to fd 2 when TensorFlow is first
imported, before ``TF_CPP_MIN_LOG_LEVEL`` or Python logging can apply, and TensorFlow 2.21 prints
them twice (two of its shared libraries each initialise the runtime and log). TF Serving's log has
them once; so does mlsrv's. ``mlsrv show`` and ``run`` drop them (``cli/tf_import.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured_tensorflow_import(*, echo_once: bool) -> Iterator[None]:
    """Capture fd 2 while TensorFlow is first imported; then write each captured line once, in order
    (``echo_once``), or drop them all.

    A temporary file, not a pipe, holds them: a pipe that nobody reads while the import runs could
    fill and block it. A no-op once TensorFlow is imported, or when stderr is not a file descriptor.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured stderr (tests): nothing to capture
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
            if echo_once:
                captured.seek(0)
                seen: set[bytes] = set()
                for line in captured.read().splitlines(keepends=True):
                    key = line.split(b"] ", 1)[-1] if line.startswith((b"I0000", b"W0000", b"E0000")) else line
                    if key not in seen:  # the same message again, with another timestamp: printed once
                        seen.add(key)
                        os.write(fd, line)
