"""A real S3 endpoint for tests: moto's standalone server on a free loopback port.

boto3 reaches it over real HTTP with dummy credentials, so requests, headers (conditional
writes, 304s), timeouts and a server that goes away behave as they do against a bucket.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from benchmarks.harness.server import free_port

# Distinctive on purpose: a test asserts that no error message ever shows the secret.
SECRET = "dummy-secret-never-shown"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
    "AWS_CONFIG_FILE": os.devnull,  # nor read a developer's real profiles
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


class MotoServer:
    """`python -m moto.server` as a subprocess; stop() and start() keep the same port."""

    def __init__(self, port: int | None = None):
        if importlib.util.find_spec("moto") is None:
            pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> MotoServer:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        env = {**os.environ, **DUMMY_AWS}
        self._process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not start on {self.url}: {command}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def use_dummy_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the AWS credential chain of this test at the dummy credentials only."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)


def raw_client(endpoint_url: str):
    """A plain boto3 client on the server: how tests play another writer or an attacker."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1")


def new_bucket(endpoint_url: str, name: str | None = None) -> str:
    """Create a bucket (a fresh random one unless named); returns its name."""
    name = name or f"livetune-{uuid.uuid4().hex[:16]}"
    raw_client(endpoint_url).create_bucket(Bucket=name)
    return name
