"""Faults between the commands and their buckets, injected by fault_proxy.py at the request
each test names: a connection reset, a reply lost after the server acted, 503, a stall, an
upload cut short. For each: the command either recovers through the storage libraries'
retries and ends as an uninterrupted run does (final parameters bitwise equal), or stops
with one line and exit 2, and the same command run again then ends as the uninterrupted
run. No reader ever sees a half-written checkpoint or store.
"""

import contextlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from brats_jax import files
from brats_jax.data import prepare, synth
from brats_jax.data.store import PreparedStore
from brats_jax.workdir.checkpoints import Checkpoints

from bucket_servers import Servers, forget_bucket_clients
from conftest import ROOT, TINY_SHAPE, new_train_state, tiny_config
from fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.slow  # two servers and a training launch per fault

STEPS = 3
CHUNK_UPLOAD = r"uploadType=media&name=[^&]*%2Fd%2F"  # an OCDBT data file (array chunks)
CHUNK_READ = r"^GET [^?]*%2Fd%2F[^?]*\?alt=media"
OCDBT_MANIFEST_UPLOAD = r"uploadType=media&name=[^&]*%2Fmanifest\.ocdbt"
METRICS_UPLOAD = r"^POST [^?]*\?name=[^&]*/metrics\.jsonl&uploadType=resumable$"


def _commit_marker(step: int) -> str:
  """The upload of a checkpoint's own commit marker, which Orbax writes last."""
  return rf"^POST [^?]*\?name=[^&]*/checkpoints/{step}/commit_success\.txt&uploadType=resumable$"


@pytest.fixture(scope="module")
def buckets(tmp_path_factory):
  """The servers, each behind a fault proxy; what a command needs to reach them."""
  servers = Servers(tmp_path_factory.mktemp("fault_servers"))
  gcs, s3 = FaultProxy(servers.gcs_port), FaultProxy(servers.s3_port)
  import boto3

  boto3.client("s3", endpoint_url=servers.s3_endpoint, region_name="us-east-1",
               aws_access_key_id=servers.key,
               aws_secret_access_key=servers.secret).create_bucket(Bucket="stores")
  env = servers.env(STORAGE_EMULATOR_HOST=gcs.url, AWS_ENDPOINT_URL=s3.url)
  yield {"gcs": gcs, "s3": s3, "env": env}
  gcs.close()
  s3.close()
  servers.stop()


@pytest.fixture(autouse=True)
def no_faults_left(buckets):
  yield
  buckets["gcs"].clear()
  buckets["s3"].clear()


@pytest.fixture(scope="module")
def raw_cases(tmp_path_factory):
  raw = str(tmp_path_factory.mktemp("fault_raw") / "raw")
  synth.write_dataset(raw, "brats2021", num_cases=6, shape=TINY_SHAPE, seed=11)
  return raw


@pytest.fixture(scope="module")
def local_store(raw_cases, tmp_path_factory):
  store = str(tmp_path_factory.mktemp("fault_local") / "store")
  prepare.prepare(raw_cases, store, num_workers=2, fg_per_class=200)
  return store


def _command(module, *args, env, timeout=400):
  return subprocess.run([sys.executable, "-m", f"brats_jax.cli.{module}", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **env))


def _train(buckets, store, workdir, steps=STEPS):
  return _command("train", f"--config={ROOT}/configs/tiny.py", f"--workdir={workdir}",
                  f"--config.data.store={store}", "--config.data.val_fold=-1",
                  f"--config.train.num_steps={steps}", "--config.checkpoint.every_steps=1",
                  "--config.log_every_steps=1", env=buckets["env"])


def _ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _one_error_line(result, url) -> str:
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[0].startswith(f"error: {url}"), lines[0]
  return lines[0]


@contextlib.contextmanager
def _in_buckets(buckets):
  """This process reaches the servers as the commands do (for the readers below)."""
  with pytest.MonkeyPatch.context() as patch:
    for name, value in buckets["env"].items():
      patch.setenv(name, value)
    forget_bucket_clients()  # another module's servers may have been this process's last
    try:
      yield
    finally:
      forget_bucket_clients()


def _checkpoints_as_a_reader_sees_them(buckets, workdir, local_store):
  """The committed steps a new reader lists, the latest restored whole: its parameters and
  data position."""
  with _in_buckets(buckets):
    config = tiny_config(local_store)
    from brats_jax import sharding

    _, state, _ = new_train_state(config, sharding.make_mesh())
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
      steps = checkpoints.all_steps()
      restored, data, _ = checkpoints.restore(steps[-1], state)
    finally:
      checkpoints.close()
  return steps, jax.device_get(restored["params"]), data


@pytest.fixture(scope="module")
def uninterrupted(buckets, local_store):
  """The run every faulted run must end as: the same command, no fault."""
  workdir = "gs://runs/uninterrupted"
  _ok(_train(buckets, local_store, workdir))
  steps, params, data = _checkpoints_as_a_reader_sees_them(buckets, workdir, local_store)
  assert steps[-1] == STEPS and data["next_step"] == STEPS
  return params


def _assert_ends_as(buckets, workdir, local_store, uninterrupted):
  steps, params, data = _checkpoints_as_a_reader_sees_them(buckets, workdir, local_store)
  assert steps[-1] == STEPS and data["next_step"] == STEPS, steps
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(params), strict=True):
    assert np.array_equal(a, b)  # bitwise


RECOVERED = {
    "reset_on_a_chunk_upload": Fault("reset", CHUNK_UPLOAD, nth=2),
    "cut_chunk_upload": Fault("cut", CHUNK_UPLOAD, nth=3),
    "lost_reply_on_an_ocdbt_manifest": Fault("lost_reply", OCDBT_MANIFEST_UPLOAD, nth=2),
    "503_on_a_commit_marker": Fault("503", _commit_marker(2), times=2),
    "lost_reply_on_a_commit_marker": Fault("lost_reply", _commit_marker(1)),
    "stalled_metrics_upload": Fault("stall", METRICS_UPLOAD, stall_s=4.0),
}


@pytest.mark.parametrize("name", list(RECOVERED))
def test_a_passing_fault_while_saving_is_retried_and_the_run_ends_as_without_it(
    buckets, local_store, uninterrupted, name):
  fault = RECOVERED[name]
  buckets["gcs"].inject(fault)
  workdir = f"gs://runs/{name}"
  _ok(_train(buckets, local_store, workdir))
  assert fault.hits, f"the fault never happened: {name}"
  buckets["gcs"].clear()
  _assert_ends_as(buckets, workdir, local_store, uninterrupted)


def test_a_fault_while_restoring_is_retried_and_the_relaunch_ends_as_without_it(
    buckets, local_store, uninterrupted):
  workdir = "gs://runs/restore_fault"
  _ok(_train(buckets, local_store, workdir, steps=STEPS - 1))
  fault = Fault("reset", CHUNK_READ, nth=1, times=2)
  buckets["gcs"].inject(fault)
  result = _ok(_train(buckets, local_store, workdir))
  assert f"resumed from checkpoint at step {STEPS - 1}" in result.stdout and fault.hits
  buckets["gcs"].clear()
  _assert_ends_as(buckets, workdir, local_store, uninterrupted)


def test_a_final_checkpoint_that_cannot_commit_is_one_line_and_the_same_command_finishes(
    buckets, local_store, uninterrupted):
  """The last save's commit marker never reaches the bucket: the run must not end as if it
  had saved (exit 0 with an older latest checkpoint). A reader sees only committed steps."""
  workdir = "gs://runs/final_commit"
  buckets["gcs"].inject(Fault("503", _commit_marker(STEPS), times=None))
  _one_error_line(_train(buckets, local_store, workdir), workdir)
  buckets["gcs"].clear()
  steps, _, data = _checkpoints_as_a_reader_sees_them(buckets, workdir, local_store)
  assert steps[-1] == STEPS - 1 and data["next_step"] == STEPS - 1
  result = _ok(_train(buckets, local_store, workdir))
  assert f"resumed from checkpoint at step {STEPS - 1}" in result.stdout
  _assert_ends_as(buckets, workdir, local_store, uninterrupted)


def test_a_workdir_server_gone_mid_run_is_one_line_and_the_same_command_finishes(
    buckets, local_store, uninterrupted):
  """Every request from step 2's data on is refused: the run stops in one line after the
  retries, keeping step 1 whole; the same command then finishes."""
  workdir = "gs://runs/server_gone"
  buckets["gcs"].inject(Fault("503", rf"checkpoints(/|%2F){STEPS - 1}(/|%2F)", times=None))
  _one_error_line(_train(buckets, local_store, workdir), workdir)
  buckets["gcs"].clear()
  steps, _, _ = _checkpoints_as_a_reader_sees_them(buckets, workdir, local_store)
  assert steps == [1], steps
  _ok(_train(buckets, local_store, workdir))
  _assert_ends_as(buckets, workdir, local_store, uninterrupted)


def _assert_store_equals(url, local_store, buckets):
  with _in_buckets(buckets):
    there, here = PreparedStore(url), PreparedStore(local_store)
    assert there.case_ids() == here.case_ids()
    for case_id in here.case_ids():
      for a, b in zip(there.read_case(case_id), here.read_case(case_id), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_passing_fault_while_preparing_is_retried_and_the_store_is_whole(
    buckets, raw_cases, local_store, scheme):
  url = f"{scheme}://{'stores' if scheme == 's3' else 'runs'}/retried/store"
  proxy = buckets["s3" if scheme == "s3" else "gcs"]
  # A case array's shard (its chunks) and its zarr.json, which TensorStore creates only if
  # absent: after a lost reply, the retried create finds its own first attempt there.
  if scheme == "s3":
    shard, metadata = r"^PUT /stores/retried/store/images/[^/?]+/c/", \
        r"^PUT /stores/retried/store/images/[^/?]+/zarr\.json"
  else:
    shard, metadata = r"uploadType=media&name=retried%2Fstore%2Fimages%2F[^&]*%2Fc%2F", \
        r"uploadType=media&name=retried%2Fstore%2Fimages%2F[^&]*%2Fzarr\.json"
  faults = [Fault("reset", shard, nth=1), Fault("503", shard, nth=3),
            Fault("lost_reply", metadata, nth=2)]
  proxy.inject(*faults)
  _ok(_command("prepare", f"--input={raw_cases}", f"--output={url}", "--fg_per_class=200",
               env=buckets["env"]))
  assert all(f.hits for f in faults), [f.hits for f in faults]
  proxy.clear()
  _assert_store_equals(url, local_store, buckets)


def test_a_store_whose_manifest_cannot_be_written_is_no_store_and_the_rerun_is_whole(
    buckets, raw_cases, local_store):
  url = "gs://runs/no_manifest/store"
  buckets["gcs"].inject(Fault("503", r"name=no_manifest/store/manifest\.json", times=None))
  _one_error_line(_command("prepare", f"--input={raw_cases}", f"--output={url}",
                           "--fg_per_class=200", env=buckets["env"]), url)
  buckets["gcs"].clear()
  with _in_buckets(buckets):
    assert not files.exists(files.join(url, "manifest.json"))
    with pytest.raises(Exception, match="brats-jax-prepare"):
      PreparedStore(url)
  _ok(_command("prepare", f"--input={raw_cases}", f"--output={url}", "--fg_per_class=200",
               env=buckets["env"]))
  _assert_store_equals(url, local_store, buckets)
