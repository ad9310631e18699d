"""Model base paths in object storage (``s3://``, ``gs://``, ``az://``): listed remotely, loaded locally.

TF Serving read S3 until 2.7 and GCS through TensorFlow's file systems; mlsrv reads all three through
fsspec (``pip install mlsrv[s3]``, ``[gcs]``, ``[azure]``). Loading a SavedModel reads many small
files, some twice, so a version is not loaded from the bucket: each poll lists the base path (one
listing per model), the version policy picks versions as for a local directory, and each picked
version is downloaded **once** into a local cache, then loaded from there:

* atomic: a version is downloaded into a private temporary folder beside its final place and renamed
  into place only once complete, so a half-downloaded version is never loaded (a worker of
  ``--workers`` that loses the race to another finds the version in place and uses it);
* a failed listing or download (the store unreachable, a file gone mid-download) raises
  ``RemoteStorageError``: the source then keeps the versions it had, so the old version keeps
  serving, and the next poll tries again;
* a version no longer listed is unloaded by the source as for a local directory, and its cached
  copy removed.

Credentials and endpoints come from the environment, with TF Serving's S3 variables where it had
them: ``AWS_REGION``, ``S3_ENDPOINT`` (``host:port`` or a URL), ``S3_USE_HTTPS`` (0 for plain HTTP),
``S3_VERIFY_SSL`` (0 to skip certificate checks), plus boto's usual ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / profiles; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS; adlfs' ``AZURE_STORAGE_*``
variables for Azure.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mlsrv.errors import ConfigError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

#: URL scheme -> (fsspec protocol, the extra that installs it)
SCHEMES: Final = {"s3": ("s3", "s3"), "gs": ("gcs", "gcs"), "gcs": ("gcs", "gcs"), "az": ("abfs", "azure"),
                  "abfs": ("abfs", "azure")}  # fmt: skip
_FALSE: Final = ("0", "false", "no", "off")

FileSystemFactory = Callable[[str], "AbstractFileSystem"]


class RemoteStorageError(Exception):
    """A listing or download failed; the caller keeps what it had and tries again later."""


def is_remote(base_path: str) -> bool:
    scheme, sep, _ = base_path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def default_cache_dir() -> Path:
    """``$MLSRV_MODEL_CACHE``, else ``$XDG_CACHE_HOME/mlsrv/models`` (``~/.cache/mlsrv/models``)."""
    explicit = os.environ.get("MLSRV_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlsrv" / "models"


def filesystem_for(scheme: str) -> AbstractFileSystem:
    """The fsspec filesystem for a URL scheme, configured from the environment (see the module doc)."""
    protocol, extra = SCHEMES[scheme.lower()]
    try:
        import fsspec

        if protocol == "s3":
            return fsspec.filesystem("s3", **s3_options(os.environ))
        return fsspec.filesystem(protocol)
    except ImportError as error:
        raise ConfigError(f"{scheme}:// model paths need `pip install mlsrv[{extra}]` ({error})") from None


def s3_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """s3fs options from TF Serving's S3 variables (``tensorflow/core/platform/s3`` read the same)."""
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    use_https = environ.get("S3_USE_HTTPS", "1").strip().lower() not in _FALSE
    endpoint = environ.get("S3_ENDPOINT", "").strip()
    if endpoint:
        client["endpoint_url"] = endpoint if "://" in endpoint else f"{'https' if use_https else 'http'}://{endpoint}"
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        client["region_name"] = region
    if environ.get("S3_VERIFY_SSL", "1").strip().lower() in _FALSE:
        client["verify"] = False
    if not use_https:
        options["use_ssl"] = False
    if client:
        options["client_kwargs"] = client
    return options


class RemoteStorage:
    """Lists remote base paths and keeps the selected versions in a local cache. Blocking: call it
    from a thread (the source does)."""

    def __init__(self, cache_dir: Path, filesystem: FileSystemFactory | None = None) -> None:
        """``filesystem``: scheme -> fsspec filesystem (tests pass an in-memory one; default :func:`filesystem_for`)."""
        self.cache_dir = cache_dir
        self._filesystem = filesystem
        self._filesystems: dict[str, AbstractFileSystem] = {}

    def list_folders(self, base_path: str) -> dict[str, str]:
        """Name -> remote path of every folder directly under ``base_path`` (one listing).

        ``OSError`` (FileNotFoundError) when the base path does not exist, as for a local one;
        ``RemoteStorageError`` when the store fails, so nothing changes until it answers again.
        """
        fs = self._fs(base_path.partition("://")[0])
        root = base_path.rstrip("/")
        try:
            if not fs.exists(root):
                raise FileNotFoundError(f"{base_path} does not exist")
            entries = fs.ls(root, detail=True, refresh=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # botocore, aiohttp and adlfs raise their own types
            raise RemoteStorageError(f"cannot list {base_path}: {error}") from error
        folders = {}
        for entry in entries:
            if entry.get("type") == "directory":
                path = str(entry["name"]).rstrip("/")  # the filesystem's own path form
                folders[path.rsplit("/", 1)[-1]] = path
        return folders

    def fetch(self, base_path: str, selected: Mapping[int, str], listed: Mapping[int, str]) -> dict[int, str]:
        """Version -> local folder for each ``selected`` version, downloading the ones not cached yet;
        cached versions no longer ``listed`` are removed."""
        fs = self._fs(base_path.partition("://")[0])
        local = {version: self._ensure(fs, base_path, version, remote) for version, remote in selected.items()}
        self._prune(base_path, set(listed))
        return local

    def _fs(self, scheme: str) -> AbstractFileSystem:
        key = scheme.lower()
        if key not in self._filesystems:
            self._filesystems[key] = (self._filesystem or filesystem_for)(key)
        return self._filesystems[key]

    def model_dir(self, base_path: str) -> Path:
        """The cache folder of one base path (its name readable, its hash unique)."""
        digest = hashlib.sha256(base_path.encode()).hexdigest()[:16]
        readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in base_path.split("://", 1)[-1])[-60:]
        return self.cache_dir / f"{readable}-{digest}"

    def _ensure(self, fs: AbstractFileSystem, base_path: str, version: int, remote: str) -> str:
        """The local copy of one version, downloaded (atomically) if it is not there yet."""
        final = self.model_dir(base_path) / str(version)
        if final.is_dir():
            return str(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{version}-", dir=final.parent))
        try:
            log.info("Downloading %s into %s", remote, final)
            fs.get(remote.rstrip("/") + "/", str(partial) + "/", recursive=True)
            try:
                partial.rename(final)
            except OSError:  # another worker put it in place first: theirs is as complete as ours
                if not final.is_dir():
                    raise
        except Exception as error:
            raise RemoteStorageError(f"cannot download {remote}: {error}") from error
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return str(final)

    def _prune(self, base_path: str, listed: set[int]) -> None:
        """Remove cached versions the store no longer lists (the source unloads them)."""
        folder = self.model_dir(base_path)
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name.isdigit() and int(child.name) not in listed:
                with contextlib.suppress(OSError):
                    shutil.rmtree(child)
