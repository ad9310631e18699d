"""Process-wide settings ``mlsrv serve`` makes once, before the server starts (never in library use).

- **File descriptors.** The soft ``RLIMIT_NOFILE`` is raised to the hard limit, as most servers do
  at start: every REST and gRPC connection needs one, and the REST connection cap
  (``rest_connections.default_max_connections``) is derived from what is available.
- **Memory kept for reuse.** A server allocates and frees the same large blocks for every request
  or batch: request bodies, a codec worker's simdjson buffers and arrays, TensorFlow's batch tensors
  and activations (its CPU allocator is glibc's ``malloc``). glibc serves blocks above its mmap
  threshold with ``mmap`` and gives the top of a heap back once more than its trim threshold is
  free, and both thresholds start small (128 KiB) and only grow as blocks are freed. Whatever is
  given back is faulted in again, page by page, by the next request: measured (issue #18,
  docs/benchmarks.md), ~150-180 page faults and ~0.6 ms of the loop per refused 530 KB body, ~750
  faults and half a codec worker's CPU per MLP body, and 2.0-2.5 million faults per 8 s of
  MobileNetV2 batches. Both the server and its codec workers set the thresholds glibc's own
  adaptation ends at (mmap above 32 MiB, trim above 64 MiB) from the start: MobileNetV2 over gRPC
  +15-44% images/s and over REST +7-43% (three alternated pairs), the codec worker's CPU per MLP body
  halved. The price is memory kept after large requests: up to the trim threshold free at the top of
  each heap. Until 2026-12-08 the mmap threshold was fixed at 1 MiB to give large requests' memory
  back (200 failing 7.6 MB gRPC Predicts, bench/reliability.py: RSS +33 MiB that stays, against +82
  MiB now); a server that must return memory between rare large requests can still lower them with
  glibc's own ``GLIBC_TUNABLES`` (``glibc.malloc.mmap_threshold``, ``glibc.malloc.trim_threshold``),
  which ``mallopt`` here overrides only when they are unset. ``mallopt`` is a no-op on other C
  libraries.
- **TensorFlow's CPU memory pooled.** TensorFlow's CPU tensors come from ``malloc`` unless
  ``TF_CPU_ALLOCATOR_USE_BFC`` is set; with it they come from TensorFlow's own pool (its GPU
  allocator's design), which keeps what it has grown to. A convolutional model's batch allocates and
  frees activations of tens to hundreds of MB, above any mmap threshold, so with ``malloc`` they
  were faulted in again every batch: MobileNetV2 over gRPC 52.9-60.1 against 36.1-36.5 images/s with
  the pool (two alternated pairs, docs/benchmarks.md), half_plus_two and the MLP over REST 1.02-1.21x
  requests/s, peak RSS +11% on MobileNetV2 and unchanged on the small models; the pool's memory is
  not given back after a load. :func:`pool_tensorflow_cpu_memory` sets it before TensorFlow is
  imported unless the environment already says (``TF_CPU_ALLOCATOR_USE_BFC=0`` keeps ``malloc``).
- **Codec workers end with the server.** A worker waits for work on a pipe whose write end every
  worker holds too, so when the server is killed (SIGKILL, the OOM killer) rather than stopped, the
  pipe never closes and the workers wait forever, each holding its memory (seen: three workers of
  killed test and benchmark servers, reparented to init, still waiting). Linux's
  ``PR_SET_PDEATHSIG`` kills a worker when the server's thread that started it (the event loop's)
  ends; a worker whose server is already gone when it starts exits at once. Elsewhere a worker
  outlives a killed server, as before.
- **The event loop.** uvloop (libuv, in C) when it is installed (a dependency on Linux and macOS):
  measured in one run on half_plus_two with batching, REST c=32 +17-25% requests/s and -15% server
  CPU per request, gRPC neutral to +14% (docs/benchmarks.md). The stock loop otherwise.
- **Trimming after very large bodies.** A body arrives in socket-sized chunks (tens of KiB, below
  any mmap threshold), so a 1 GiB upload fragments the heap and glibc keeps hundreds of MiB after
  it is freed (measured: +300 MiB after a chunked body refused at the 1 GiB cap).
  :func:`trim_heap` (``malloc_trim``) hands it back; ctypes releases the GIL during the call, so
  the REST frontend runs it on a thread after such a request.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: glibc's dynamic mmap threshold stops growing here (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit), and
#: its trim threshold follows at twice it: where the server and its codec workers start.
MMAP_THRESHOLD_BYTES: Final = 32 << 20
TRIM_THRESHOLD_BYTES: Final = 64 << 20


def pool_tensorflow_cpu_memory() -> None:
    """TensorFlow's pooling CPU allocator, unless the environment chose (see the module's docstring);
    before TensorFlow allocates anything."""
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "1")


def tune_process() -> None:
    _raise_descriptor_limit()
    _keep_blocks_for_reuse()


def trim_heap() -> None:
    """Return free heap memory to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim.argtypes = (ctypes.c_size_t,)
        trim(0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _raise_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.debug("could not raise the file descriptor limit from %d: %s", soft, error)


def tune_codec_worker(server_pid: int) -> None:
    """A codec worker's settings: it keeps its large blocks for the next request instead of faulting
    them in again, and it ends when the server (``server_pid``, its parent) does."""
    _keep_blocks_for_reuse()
    _end_with_parent(server_pid)


def _end_with_parent(parent_pid: int) -> None:
    libc = _libc()
    prctl = getattr(libc, "prctl", None) if libc is not None and sys.platform == "linux" else None
    if prctl is None:
        return
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the server ended before the death signal was asked for: none will come
        os._exit(0)


def _keep_blocks_for_reuse() -> None:
    """The malloc thresholds (see the module's docstring), unless the operator set glibc's own."""
    if "malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return
    _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def _mallopt(parameter: int, value: int) -> None:
    """glibc's ``mallopt``; a no-op where the C library has none."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt(parameter, value)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None (the stock loop) when uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
