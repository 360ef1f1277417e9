"""The adapter registry on a real S3 endpoint (moto's server on loopback, over HTTP)."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from botocore.awsrequest import AWSResponse

from tests.registry_contract import WEIGHTS, RegistryContract, names, publish
from tests.s3 import SECRET, MotoServer, new_bucket, raw_client, use_dummy_credentials
from training.registry import RegistryError, RegistryUnavailable, S3Registry
from training.registry.s3_cache import PARTIAL_PREFIX

PREFIX = "adapters"


@pytest.fixture
def bucket(moto_server, monkeypatch):
    use_dummy_credentials(monkeypatch)
    return new_bucket(moto_server.url)


@pytest.fixture
def open_registry(bucket, moto_server, tmp_path):
    """Open a registry on the test's bucket, each with its own cache (another host)."""
    hosts = iter(range(100))

    def open_one(**options):
        cache = tmp_path / f"host-{next(hosts)}"
        url = f"s3://{bucket}/{PREFIX}"
        return S3Registry(url, cache_dir=cache, keep=3, endpoint_url=moto_server.url, **options)

    return open_one


@pytest.fixture
def s3(moto_server):
    return raw_client(moto_server.url)


def key(version: str, name: str) -> str:
    return f"{PREFIX}/versions/{version}/{name}"


class TestS3Registry(RegistryContract):
    """The adapter-store contract on an S3 bucket."""

    @pytest.fixture
    def registry(self, open_registry):
        return open_registry()

    @pytest.fixture
    def reopen(self, open_registry):
        return open_registry

    def leave_half_version(self, registry, version):
        s3 = raw_client(registry.bucket.brief.meta.endpoint_url)
        s3.put_object(Bucket=registry.bucket.name, Key=key(version, "a.safetensors"), Body=b"h")


def cache_is_empty(registry) -> bool:
    return os.listdir(registry.cache.folder) == []


@pytest.mark.parametrize("tampered", [b"WEIGHTS", b"longer weights"])  # same size, or not
def test_a_tampered_object_is_refused_and_leaves_no_copy(open_registry, bucket, s3, tampered):
    version = publish(open_registry())
    s3.put_object(Bucket=bucket, Key=key(version, "adapter_model.safetensors"), Body=tampered)
    worker = open_registry()

    with pytest.raises(RegistryError, match="adapter_model.safetensors"):
        worker.materialize(version)
    assert cache_is_empty(worker)


@pytest.mark.parametrize(
    "planted",
    [
        "../escape.safetensors",
        "../../CURRENT.txt",
        "sub/x.safetensors",
        "extra.safetensors",
        "x.pkl",
    ],
)
def test_a_key_that_is_not_a_listed_flat_file_blocks_the_version(
    open_registry, bucket, s3, planted
):
    trainer = open_registry()
    good, bad = publish(trainer), publish(trainer)
    s3.put_object(Bucket=bucket, Key=key(bad, planted), Body=b"\x80\x04pickle")
    worker = open_registry()

    with pytest.raises(RegistryError, match="delete it"):
        worker.materialize(bad)
    with pytest.raises(RegistryError):
        trainer.activate(bad)
    assert names(worker) == [good]
    assert cache_is_empty(worker)


def test_a_manifest_naming_a_path_is_refused(open_registry, bucket, s3):
    version = publish(open_registry())
    manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=key(version, "manifest.json"))["Body"].read()
    )
    manifest["files"]["../../evil.safetensors"] = manifest["files"].pop("adapter_config.json")
    s3.put_object(Bucket=bucket, Key=key(version, "manifest.json"), Body=json.dumps(manifest))
    worker = open_registry()

    with pytest.raises(RegistryError, match="not a flat file name"):
        worker.materialize(version)
    assert cache_is_empty(worker)


def test_a_damaged_cached_copy_is_downloaded_again(open_registry):
    registry = open_registry()
    folder = registry.materialize(publish(registry))
    (folder / "adapter_model.safetensors").write_bytes(b"torn")

    assert registry.materialize(folder.name) == folder
    assert (folder / "adapter_model.safetensors").read_bytes() == WEIGHTS
    assert not any(name.startswith(PARTIAL_PREFIX) for name in os.listdir(folder.parent))


@pytest.mark.parametrize("before", ["absent", "present"])
def test_of_two_racing_promoters_one_wins_and_the_other_is_told(open_registry, before):
    trainer, operator = open_registry(), open_registry()
    first, mine, theirs = publish(trainer), publish(trainer), publish(trainer)
    if before == "present":
        trainer.activate(first)
    read_current_then_validate = trainer.get

    def interleaved(version):  # the operator moves CURRENT after the trainer read its ETag
        operator.activate(theirs)
        return read_current_then_validate(version)

    trainer.get = interleaved
    with pytest.raises(RegistryError, match="CURRENT changed while activating"):
        trainer.activate(mine)
    assert open_registry().current() == theirs


def test_a_store_without_conditional_writes_gets_a_plain_put(open_registry, caplog):
    registry = open_registry()
    version = publish(registry)

    def refuse_conditions(request, **_):
        if "If-Match" in request.headers or "If-None-Match" in request.headers:
            body = b"<Error><Code>NotImplemented</Code><Message>no</Message></Error>"
            return AWSResponse(request.url, 501, {}, _Raw(body))
        return None

    registry.bucket.brief.meta.events.register("before-send.s3.PutObject", refuse_conditions)
    registry.activate(version)
    assert open_registry().current() == version
    assert "does not support conditional writes" in caplog.text


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def test_each_poll_is_one_request(open_registry):
    registry = open_registry()
    registry.activate(publish(registry))
    sent = []
    for client in (registry.bucket.quick, registry.bucket.brief, registry.bucket.bulk):
        client.meta.events.register("before-send", lambda **kw: sent.append(kw))

    for _ in range(3):
        registry.current()

    assert len(sent) == 3  # a conditional GET of CURRENT each, answered 304 while unchanged


def test_current_naming_a_deleted_version_means_base_model(open_registry, bucket, s3, caplog):
    registry = open_registry()
    version = publish(registry)
    registry.activate(version)
    s3.delete_object(Bucket=bucket, Key=key(version, "manifest.json"))
    with caplog.at_level(logging.WARNING):
        assert open_registry().current() is None
    assert f"unknown adapter version '{version}'" in caplog.text


def test_clean_staging_removes_every_unfinished_upload(open_registry, bucket, s3):
    # It runs under the run lock, which spans hosts: no other trainer is publishing, so
    # files without a manifest are what a trainer killed mid-upload left behind.
    registry = open_registry()
    published = publish(registry)
    crashed = "v0008-20260101T000000"
    s3.put_object(Bucket=bucket, Key=key(crashed, "adapter_model.safetensors"), Body=b"half")

    assert registry.clean_staging() == 1

    left = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert key(crashed, "adapter_model.safetensors") not in left
    assert names(registry) == [published]
    assert registry.materialize(published).is_dir()  # the published one is untouched


def test_clean_staging_spares_a_download_in_progress_on_this_host(open_registry):
    registry = open_registry()
    cache = registry.cache.folder
    for name in (f"{PARTIAL_PREFIX}crashed", f"{PARTIAL_PREFIX}downloading", ".staging-crashed"):
        (cache / name).mkdir()
        (cache / name / "adapter_model.safetensors").write_bytes(b"half")
    hour_ago = time.time() - 3600
    for path in (
        cache / f"{PARTIAL_PREFIX}crashed",
        cache / f"{PARTIAL_PREFIX}crashed" / "adapter_model.safetensors",
    ):
        os.utime(path, (hour_ago, hour_ago))

    assert registry.clean_staging() == 2
    assert os.listdir(cache) == [f"{PARTIAL_PREFIX}downloading"]  # a worker's, still written


def test_a_missing_bucket_is_a_configuration_error_not_an_outage(
    moto_server, tmp_path, monkeypatch
):
    use_dummy_credentials(monkeypatch)
    registry = S3Registry("s3://no-such-bucket/x", tmp_path, endpoint_url=moto_server.url)
    with pytest.raises(RegistryError, match="NoSuchBucket") as refused:
        registry.current()
    assert not isinstance(refused.value, RegistryUnavailable)


def test_a_store_that_goes_away_is_unavailable_fast_then_recovers(tmp_path, monkeypatch):
    use_dummy_credentials(monkeypatch)
    with MotoServer() as server:  # its own server: stopping it must not disturb other tests
        bucket = new_bucket(server.url)
        url = f"s3://{bucket}/{PREFIX}"
        worker = S3Registry(url, tmp_path / "worker", endpoint_url=server.url)
        worker.activate(publish(worker))
        server.stop()

        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="cannot reach") as down:
            worker.current()
        assert time.monotonic() - started < 2  # workers poll twice a second
        assert SECRET not in str(down.value)

        server.start()  # the same endpoint, back (moto keeps no data across restarts)
        new_bucket(server.url, bucket)
        trainer = S3Registry(url, tmp_path / "trainer", endpoint_url=server.url)
        version = publish(trainer, weights=b"after the outage")
        trainer.activate(version)
        assert worker.current() == version
        folder = worker.materialize(version)
        assert (folder / "adapter_model.safetensors").read_bytes() == b"after the outage"
