"""``mlsrv serve``'s process-wide settings: the event loop it runs on, the C allocator's thresholds."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlsrv.cli.runner import run
from mlsrv.server.process_tuning import event_loop_factory


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_serve_runs_on_uvloop_when_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    assert run(loop_module(), loop_factory=factory).startswith("uvloop")


def test_without_a_factory_commands_run_on_the_stock_loop() -> None:
    assert run(loop_module()).startswith("asyncio")


def _glibc() -> bool:
    return platform.libc_ver()[0] == "glibc"


#: glibc's mallopt as ``mlsrv serve`` set it before 2026-12-08: mmap above 1 MiB (trim at 128 KiB), and
#: with the trim threshold at 4 MiB (earlier the same day)
_MMAP_AT_1_MIB = "import ctypes; ctypes.CDLL(None).mallopt(-3, 1 << 20)"
_MMAP_AT_1_MIB_TRIM_AT_4 = _MMAP_AT_1_MIB + "; ctypes.CDLL(None).mallopt(-1, 4 << 20)"


def _faults_reusing_a_block(setup: str, size: int) -> int:
    """Minor page faults while a fresh interpreter, after ``setup`` (Python), allocates, fills and
    frees a ``size``-byte block 100 times: ~0 when the block's memory is reused, about
    ``size / 4096`` per round when it is given back to the system and faulted in again."""
    code = f"""
import resource
from mlsrv.server import process_tuning
{setup}
for _ in range(3):
    block = bytes({size}) + b"x"  # allocated and every page written
    del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    block = bytes({size}) + b"x"
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout)


@pytest.mark.skipif(not _glibc(), reason="mallopt thresholds are glibc's")
def test_request_and_batch_sized_blocks_are_reused_not_faulted_in_again_every_time() -> None:
    """The server's and its codec workers' thresholds keep a 530 KB block (an MLP body) and a 20 MB
    one (a batch of 32 images, MobileNetV2's activations) on the heap for the next request. With the
    mmap threshold fixed at 1 MiB, the 128 KiB trim threshold gave the heap's top back on every free
    of the small one, and a 4 MiB trim threshold still let the large one be mmapped every time."""
    assert _faults_reusing_a_block("process_tuning.tune_process()", 530_000) < 500
    assert _faults_reusing_a_block("process_tuning.tune_process()", 20_000_000) < 500
    as_worker = "import os; process_tuning.tune_codec_worker(os.getppid())"
    assert _faults_reusing_a_block(as_worker, 530_000) < 500
    assert _faults_reusing_a_block(_MMAP_AT_1_MIB, 530_000) > 5_000
    assert _faults_reusing_a_block(_MMAP_AT_1_MIB_TRIM_AT_4, 20_000_000) > 200_000


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_codec_worker_ends_when_its_server_is_killed() -> None:
    """A server killed outright (SIGKILL, the OOM killer) never stops its pool; its codec workers,
    waiting on a pipe every one of them holds open, used to run on forever."""
    code = """
import asyncio, os
from mlsrv.server.worker_pool import WorkerPool

async def main():
    pool = WorkerPool()
    print(await pool.run(os.getpid), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""
    quiet = {**os.environ, "PYTHONWARNINGS": "ignore"}  # its resource tracker reports the killed pool's semaphores
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=quiet) as server:
        try:
            assert server.stdout is not None
            worker = int(server.stdout.readline())
            assert _running(worker)
        finally:
            server.kill()
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker)


def test_serve_pools_tensorflow_cpu_memory_unless_the_environment_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsrv.server.process_tuning import pool_tensorflow_cpu_memory

    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    pool_tensorflow_cpu_memory()
    assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "1"
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "0")  # the operator keeps malloc
    pool_tensorflow_cpu_memory()
    assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "0"


def test_the_serve_command_sets_it_before_tensorflow_is_imported() -> None:
    """TensorFlow reads the variable when it first allocates; ``mlsrv serve`` sets it first thing
    (checked in a fresh interpreter: a missing config file stops serve after the setting, before TensorFlow)."""
    code = """
import os, sys
os.environ.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
from mlsrv.cli.app import main
try:
    sys.argv = ["mlsrv", "serve", "--model_config_file=/nonexistent/models.config"]
    main()
except SystemExit:
    pass
print(os.environ.get("TF_CPU_ALLOCATOR_USE_BFC"), "tensorflow" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "False"], done.stdout + done.stderr[-2000:]
