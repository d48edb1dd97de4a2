"""Stores and workdirs in buckets, against real servers on 127.0.0.1 that these tests start
and stop: moto's S3 server, with credentials checked, and gcp-storage-emulator (GCS), with
three gaps against real GCS filled by gcs_server.py.

What they cannot show: GCS credentials (the emulator takes any token); Orbax writes no s3://
checkpoints (refused in one line, tested here).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from brats_jax import files
from brats_jax.data import prepare, synth
from brats_jax.data.store import PreparedStore
from brats_jax.inference import predict
from brats_jax.train import loop
from brats_jax.workdir.checkpoints import Checkpoints

from bucket_servers import Servers, forget_bucket_clients
from conftest import ROOT, TINY_SHAPE, new_train_state, tiny_config

pytestmark = pytest.mark.slow  # two servers, several launches against them
@pytest.fixture(scope="module")
def servers(tmp_path_factory):
  running = Servers(tmp_path_factory.mktemp("servers"))
  import boto3

  boto3.client("s3", endpoint_url=running.s3_endpoint, region_name="us-east-1",
               aws_access_key_id=running.key,
               aws_secret_access_key=running.secret).create_bucket(Bucket="stores")
  yield running
  running.stop()


@pytest.fixture
def bucket_env(servers, monkeypatch):
  for name, value in servers.env().items():
    monkeypatch.setenv(name, value)
  forget_bucket_clients()  # another module's servers may have been this process's last
  yield servers
  forget_bucket_clients()


@pytest.fixture(scope="module")
def raw_cases(tmp_path_factory):
  raw = str(tmp_path_factory.mktemp("bucket_raw") / "raw")
  synth.write_dataset(raw, "brats2021", num_cases=6, shape=TINY_SHAPE, seed=11)
  return raw


@pytest.fixture(scope="module")
def local_store(raw_cases, tmp_path_factory):
  store = str(tmp_path_factory.mktemp("bucket_local") / "store")
  prepare.prepare(raw_cases, store, num_workers=2, fg_per_class=200)
  return store


@pytest.mark.parametrize("url", ["s3://stores/read/store", "gs://runs/read/store"])
def test_a_store_in_a_bucket_reads_as_the_same_store_on_disk(bucket_env, raw_cases,
                                                             local_store, url):
  prepare.prepare(raw_cases, url, num_workers=2, fg_per_class=200)
  with pytest.raises(Exception, match="already exists"):
    prepare.prepare(raw_cases, url)
  there, here = PreparedStore(url), PreparedStore(local_store)
  assert there.case_ids() == here.case_ids() and len(here.case_ids()) == 6
  assert [c["crop_box"] for c in there.manifest["cases"]] == \
      [c["crop_box"] for c in here.manifest["cases"]]
  for case_id in here.case_ids()[:2]:
    for a, b in zip(there.read_case(case_id), here.read_case(case_id)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(there.foreground(case_id), here.foreground(case_id))
  requests = [(here.case_ids()[0], (3, -2, 4), (16, 16, 16)), (here.case_ids()[3], (0, 5, 2),
                                                                (8, 16, 8))]
  for (a_image, a_labels), (b_image, b_labels) in zip(there.read_patches(requests),
                                                      here.read_patches(requests)):
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_labels, b_labels)


def _final_params(workdir, config):
  from brats_jax import sharding

  _, state, _ = new_train_state(config, sharding.make_mesh())
  checkpoints = Checkpoints(workdir, read_only=True)
  try:
    restored, data, _ = checkpoints.restore(checkpoints.latest_step(), state)
  finally:
    checkpoints.close()
  return jax.device_get(restored["params"]), data


def test_bucket_store_and_workdir_train_resume_and_predict_as_local_disks(
    bucket_env, raw_cases, local_store, tmp_path):
  store = "gs://runs/train/store"  # as launch/tpu_pod.sh: store and workdir in one bucket
  prepare.prepare(raw_cases, store, num_workers=2, fg_per_class=200)
  config = tiny_config(local_store)
  config.train.num_steps, config.eval.max_cases, config.data.val_fold = 4, 1, 0
  local = str(tmp_path / "local")
  loop.train_and_validate(config, local)

  config.data.store = store
  workdir = "gs://runs/train"
  config.train.num_steps = 2
  loop.train_and_validate(config, workdir)
  config.train.num_steps = 4  # a relaunch resumes from the bucket's checkpoint
  summary = loop.train_and_validate(config, workdir)
  assert {"WT", "TC", "ET"} <= set(summary)
  expected, _ = _final_params(local, config)
  got, data = _final_params(workdir, config)
  assert data["next_step"] == 4
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert np.array_equal(a, b)  # bitwise: the same batches, devices and steps
  for name in ("config.json", "metrics.jsonl", "training_curves.png", "tensorboard"):
    assert files.exists(files.join(workdir, name)), name
  logged = [json.loads(line)["step"] for line in
            files.read_text(files.join(workdir, "metrics.jsonl")).splitlines()
            if '"train/loss"' in line]
  assert logged == [2, 4]  # both launches' records, one upload each

  outputs = {}
  for name, run in (("local", local), ("bucket", workdir)):
    outputs[name] = str(tmp_path / f"pred_{name}")
    predict.predict_folder(run, raw_cases, outputs[name], progress=False)
  import nibabel as nib

  names = sorted(os.listdir(outputs["local"]))
  assert names == sorted(os.listdir(outputs["bucket"])) and len(names) == 6
  for name in names:
    np.testing.assert_array_equal(
        np.asarray(nib.load(os.path.join(outputs["local"], name)).dataobj),
        np.asarray(nib.load(os.path.join(outputs["bucket"], name)).dataobj))


def _command(module, *args, env):
  return subprocess.run([sys.executable, "-m", f"brats_jax.cli.{module}", *args],
                        capture_output=True, text=True, timeout=300, env=env)


def _one_error_line(result) -> str:
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  return lines[0]


def _train_args(store, workdir, *extra):
  return (f"--config={ROOT}/configs/tiny.py", f"--workdir={workdir}",
          f"--config.data.store={store}", "--config.data.val_fold=-1", *extra)


def test_missing_bucket_wrong_credentials_and_an_s3_workdir_are_one_line(
    servers, raw_cases, local_store):
  env = dict(os.environ, **servers.env())
  line = _one_error_line(_command("prepare", f"--input={raw_cases}",
                                  "--output=s3://no-such-bucket/store", env=env))
  assert line.startswith("error: s3://no-such-bucket/store") and "NoSuchBucket" in line
  wrong = dict(env, AWS_SECRET_ACCESS_KEY="not-the-secret")
  line = _one_error_line(_command("prepare", f"--input={raw_cases}",
                                  "--output=s3://stores/wrong/store", env=wrong))
  assert line.startswith("error: s3://stores/wrong/store") and "credentials" in line
  line = _one_error_line(_command("train", *_train_args(local_store, "s3://stores/run"),
                                  env=env))
  assert "s3://stores/run" in line and "gs://" in line
  line = _one_error_line(_command("train", *_train_args(local_store, "gs://no-such-bucket/run"),
                                  env=env))
  assert line.startswith("error: gs://no-such-bucket/run")
