"""Files and folders on a local disk or in a bucket (gs://, s3://), written so that a reader
never sees half of one.

A local file is written under a temporary name in its folder, then renamed. An object in a
bucket appears whole or not at all when its one upload completes, so a URL is written in one
upload. Small files (manifests, config.json, the metrics log, pictures) go through
etils.epath, the path library Orbax uses for its own checkpoint metadata (gcsfs and s3fs
under it); arrays go through TensorStore, whose key-value store for a path `kvstore_spec`
gives. Endpoints and credentials come from the standard variables (docs/multihost.md):
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://;
Google's application credentials, and STORAGE_EMULATOR_HOST for a GCS emulator, for gs://.
A bucket that cannot be reached after the libraries' retries is one StorageError naming it.
"""

import contextlib
import json
import logging
import os
import posixpath
import shutil
import tempfile

from brats_jax.errors import DataError, StorageError

URL_SCHEMES = ("gs://", "s3://")
# Retries of TensorStore's bucket requests: about a minute of backing off before a store
# read or write gives up (its default keeps retrying for many minutes).
_RETRIES = {"max_retries": 8, "initial_delay": "0.5s", "max_delay": "16s"}


def is_url(path: str) -> bool:
  return str(path).startswith(URL_SCHEMES)


def join(base: str, *parts: str) -> str:
  return posixpath.join(base, *parts) if is_url(base) else os.path.join(base, *parts)


def etils_path(url: str):
  """A local path or bucket URL as an etils.epath.Path (what Orbax's own calls take)."""
  from etils import epath  # imported on first use: bucket URLs bring in gcsfs/s3fs with it

  _configure_bucket_clients()

  # What gcsfs raises is reported in one line (reaching); its own log would repeat it with a
  # traceback, and warn about Google credentials that an emulator does not need.
  logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
  return epath.Path(url)


_derived_gcs_url = None  # TENSORSTORE_GCS_HTTP_URL as _configure_bucket_clients set it


def _configure_bucket_clients():
  """Before any bucket client starts:
  - a GCS emulator named by STORAGE_EMULATOR_HOST (which Google's clients and gcsfs read) is
    where TensorStore's gcs driver (ours and Orbax's) goes too; an emulator takes any token;
  - gcsfs and s3fs (etils.epath's, so Orbax's) keep no listings: their cache never expires
    and sees only this process's own writes, so a reader that lives on would miss the
    checkpoints and files another process wrote (fault-injection tests found it)."""
  global _derived_gcs_url
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  if host:
    url = host if "://" in host else f"http://{host}"
    # Follows the emulator's variable unless the user set TensorStore's own.
    if os.environ.get("TENSORSTORE_GCS_HTTP_URL") in (None, _derived_gcs_url):
      os.environ["TENSORSTORE_GCS_HTTP_URL"] = _derived_gcs_url = url
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
  try:
    import fsspec.config
  except ImportError:  # no cloud extra: reaching() says which package a URL needs
    return
  for protocol in ("gs", "s3"):
    fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False


@contextlib.contextmanager
def reaching(url: str, missing_is_an_answer: bool = True):
  """Turns what a storage library raises for a bucket into one StorageError naming it (a
  local path's errors pass through unchanged). FileNotFoundError passes through where a
  missing file is an answer the caller handles."""
  if not is_url(url):
    yield
    return
  _configure_bucket_clients()
  try:
    yield
  except (DataError, StorageError):
    raise
  except FileNotFoundError:
    if missing_is_an_answer:
      raise
    raise StorageError(f"{url}: not found (a bucket that does not exist?)") from None
  except ImportError as e:
    raise StorageError(f"{url}: {url.split('://')[0]}:// paths need {e.name}: pip install "
                       "'brats_jax[cloud]'") from None
  except Exception as e:  # gcsfs, s3fs, botocore and TensorStore raise many types
    first = " ".join(str(e).split())[:300]
    refused = isinstance(e, PermissionError) or any(
        word in first for word in ("Forbidden", "AccessDenied", "SignatureDoesNotMatch",
                                   "InvalidAccessKeyId", "PERMISSION_DENIED", "UNAUTHENTICATED"))
    hint = "; check the bucket's credentials" if refused else ""
    raise StorageError(f"{url}: storage unreachable or refused ({type(e).__name__}: "
                       f"{first}){hint}") from None


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  with reaching(path):
    return etils_path(path).exists()


def isdir(path: str) -> bool:
  if not is_url(path):
    return os.path.isdir(path)
  with reaching(path):
    return etils_path(path).is_dir()


def makedirs(path: str) -> None:
  """A local folder; for a bucket URL (buckets have no folders to make), a StorageError in
  one line, before anything is written, where its bucket is missing or refuses the
  credentials: TensorStore retries writes into a missing S3 bucket without end."""
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    return
  import fsspec  # with etils: imported on first use

  with reaching(path):
    filesystem, bucket_path = fsspec.core.url_to_fs(path)
    try:
      filesystem.info(bucket_path.split("/")[0])
    except FileNotFoundError:
      raise StorageError(f"{path}: the bucket does not exist (NoSuchBucket)") from None


def remove_tree(path: str) -> None:
  """Deletes a folder and everything in it, if it is there."""
  if not is_url(path):
    shutil.rmtree(path, ignore_errors=True)
    return
  with reaching(path):
    if etils_path(path).exists():
      etils_path(path).rmtree()


def remove_file(path: str) -> None:
  """Deletes a file, if it is there."""
  if not is_url(path):
    if os.path.exists(path):
      os.remove(path)
    return
  with reaching(path):
    if etils_path(path).exists():
      etils_path(path).unlink()


def rename(source: str, target: str) -> None:
  """A folder renamed (in a bucket: copied, then deleted)."""
  if not is_url(source):
    os.replace(source, target)
    return
  with reaching(source):
    etils_path(source).rename(target)


def read_bytes(path: str) -> bytes:
  if not is_url(path):
    with open(path, "rb") as f:
      return f.read()
  with reaching(path):
    return etils_path(path).read_bytes()


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def write_atomic(path: str, write) -> None:
  """write(a temporary local path), then the file moved to `path` whole: renamed in its
  folder, or uploaded in one piece to a bucket. A failed write leaves nothing behind."""
  if is_url(path):
    with tempfile.TemporaryDirectory() as folder:
      tmp = os.path.join(folder, posixpath.basename(path))
      write(tmp)
      write_bytes(path, read_bytes(tmp))
    return
  folder, name = os.path.split(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".partial-{os.getpid()}-{name}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  if is_url(path):
    with reaching(path):
      etils_path(path).write_bytes(data)
    return

  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(data)

  write_atomic(path, write)


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str, value, indent: int | None = 1) -> None:
  write_text(path, json.dumps(value, indent=indent))


def kvstore_spec(path: str) -> dict:
  """TensorStore's key-value store for a local path or a gs:// or s3:// URL. An S3-compatible
  server is reached at AWS_ENDPOINT_URL (TensorStore's s3 driver does not read it itself)."""
  if not is_url(path):
    return {"driver": "file", "path": os.path.abspath(path)}
  scheme, rest = path.split("://", 1)
  bucket, _, key = rest.partition("/")
  if scheme == "gs":
    _configure_bucket_clients()
    return {"driver": "gcs", "bucket": bucket, "path": key,
            "context": {"gcs_request_retries": _RETRIES}}
  spec = {"driver": "s3", "bucket": bucket, "path": key,
          "aws_region": os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION",
                                                                    "us-east-1")),
          "context": {"s3_request_retries": _RETRIES}}
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL"))
  if endpoint:
    spec["endpoint"] = endpoint
  return spec
