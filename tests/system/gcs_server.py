"""gcp-storage-emulator, with three things real GCS does that TensorStore relies on and the
emulator lacks:
- every download names the object's generation (`x-goog-generation`; without it TensorStore's
  OCDBT manifests, hence Orbax checkpoints, fail with "Malformed StorageGeneration");
- suffix byte ranges (`Range: bytes=-N`, how sharded zarr reads its shard index) are served;
- listings honour `startOffset`/`endOffset` (TensorStore's range delete lists one array's
  objects that way; the emulator lists the whole bucket, and the delete takes it all).

Run as the emulator's own command line: python gcs_server.py start --port=... .
"""

import json
import re
import sys

from gcp_storage_emulator.handlers import objects

_emulator_download = objects.download


class _SuffixRangeAsAbsolute:
  """The request, with `bytes=-N` restated as the absolute range the emulator understands."""

  def __init__(self, request, length: int):
    self._request, self._length = request, length

  def get_header(self, key, default=None):
    value = self._request.get_header(key, default)
    suffix = re.fullmatch(r"\s*bytes=-([0-9]+)\s*", value or "") if key.lower() == "range" \
        else None
    if suffix:
      return f"bytes={max(0, self._length - int(suffix.group(1)))}-"
    return value

  def __getattr__(self, name):
    return getattr(self._request, name)


def download(request, response, storage, *args, **kwargs):
  try:
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    generation = storage.get_file_obj(bucket, name)["generation"]
    request = _SuffixRangeAsAbsolute(request, len(storage.get_file(bucket, name)))
    response["x-goog-generation"] = str(generation)
  except Exception:  # a missing object: the emulator answers 404 itself
    pass
  return _emulator_download(request, response, storage, *args, **kwargs)


_emulator_ls = objects.ls


def ls(request, response, storage, *args, **kwargs):
  _emulator_ls(request, response, storage, *args, **kwargs)
  start, end = (request.query.get(k, [None])[0] for k in ("startOffset", "endOffset"))
  if (start or end) and response.status == 200:
    listing = json.loads(response._content)
    listing["items"] = [item for item in listing["items"]
                        if (not start or item["name"] >= start) and
                        (not end or item["name"] < end)]
    response.json(listing)


objects.ls = ls
objects.download = download  # before the server module builds its routes from it

if __name__ == "__main__":
  from gcp_storage_emulator.__main__ import main

  main(sys.argv[1:])
