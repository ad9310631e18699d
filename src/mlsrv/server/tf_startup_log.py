"""TensorFlow's C++ start-up lines in ``mlsrv serve``'s log, each once.

They (oneDNN, CUDA probing, ``absl::InitializeLog``) go straight to fd 2 when TensorFlow is first
imported, and TensorFlow 2.21 prints them twice (two of its shared libraries each initialise the
runtime and log). TF Serving's log has them once; so does mlsrv's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def tensorflow_import_deduplicated() -> Iterator[None]:
    """Capture fd 2 while TensorFlow is first imported and write each of its lines once, in order.

    A temporary file, not a pipe, holds them: a pipe that nobody reads while the import runs could
    fill and block it. A no-op once TensorFlow is imported, or when stderr is not a file descriptor.
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
