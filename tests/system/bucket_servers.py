"""The bucket servers the system tests run on 127.0.0.1: moto's S3 server, with credentials
checked, and gcp-storage-emulator (GCS, with the gaps gcs_server.py fills)."""

import json
import os
import socket
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _listening(port: int) -> bool:
  with socket.socket() as s:
    return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_listening(port: int, process, seconds: float = 30):
  deadline = time.time() + seconds
  while not _listening(port):
    assert process.poll() is None and time.time() < deadline, f"server on {port} did not start"
    time.sleep(0.2)


class Servers:
  """moto (S3, credentials checked) and gcp-storage-emulator (GCS, objects kept in a
  folder)."""

  def __init__(self, root):
    self.s3_port, self.gcs_port, self.gcs_data = _free_port(), _free_port(), str(root / "gcs")
    # The first three requests need no credentials: they create the user the tests sign as.
    self.moto = subprocess.Popen(
        [os.path.join(BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)],
        env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    _wait_listening(self.s3_port, self.moto)
    self.key, self.secret = self._s3_user()
    self.gcs = None
    self.start_gcs()

  def _s3_user(self):
    import boto3

    iam = boto3.client("iam", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="tests")
    iam.put_user_policy(UserName="tests", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="tests")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]

  @property
  def s3_endpoint(self) -> str:
    return f"http://127.0.0.1:{self.s3_port}"

  def start_gcs(self):
    self.gcs = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_server.py"), "start",
         "--host=127.0.0.1",
         f"--port={self.gcs_port}", "--default-bucket=runs"],
        cwd=os.path.dirname(self.gcs_data), env=dict(os.environ, STORAGE_BASE=self.gcs_data),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(self.gcs_port, self.gcs)

  def env(self, **changes) -> dict:
    """The standard variables a user sets to reach these servers."""
    return {"AWS_ENDPOINT_URL": self.s3_endpoint, "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.gcs_port}", **changes}

  def stop(self):
    for process in (self.moto, self.gcs):
      process.terminate()
      process.wait(30)
    assert not _listening(self.s3_port) and not _listening(self.gcs_port)


def forget_bucket_clients() -> None:
  """Drops the gcsfs and s3fs clients this process made: fsspec keeps one per set of
  arguments, with the endpoint read from the environment when it was made, and etils keeps
  fsspec's. Tests that start their own servers (other ports) call it first."""
  import fsspec
  from etils.epath import backend

  backend.fsspec_backend._get_filesystem.cache_clear()
  for protocol in ("gs", "s3"):
    fsspec.get_filesystem_class(protocol).clear_instance_cache()
