"""One bucket and key prefix through boto3: listing, reads, conditional writes, error mapping.

Imported only when an `s3://` registry is configured, so boto3 stays off hosts that never
use an object store. Credentials come from boto3's standard chain (environment, config
files, instance or pod roles); no message here ever includes them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from training.registry.base import RegistryError, RegistryUnavailable

log = logging.getLogger(__name__)

# Workers poll CURRENT twice a second: a poll that cannot connect within 1 s (or read a
# few bytes within 2 s) fails at once, without retries, since the next poll is the retry.
QUICK = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
# Listings, manifests and CURRENT writes answer operators and the trainer: one retry of a
# transient error, and a dead store told within seconds (2 x 5 s when it stops answering).
BRIEF = Config(
    connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"}
)
# Whole adapter files: a slow link may pause longer, and a transient error is retried.
BULK = Config(
    connect_timeout=2, read_timeout=30, retries={"total_max_attempts": 3, "mode": "standard"}
)
UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
BUSY_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"}
RACE_STATUS = {404, 409, 412}  # If-Match on a deleted key, a concurrent write, a lost race


@dataclass(frozen=True)
class StoredObject:
    """What a listing says about one object."""

    key: str
    size: int
    etag: str
    modified: datetime


def status(err: ClientError) -> int:
    """The HTTP status of a refused request (304 and 412 arrive as errors too)."""
    return err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def error_code(err: ClientError) -> str:
    """The S3 error code (`NoSuchKey`, `PreconditionFailed`), or the status as text."""
    return str(err.response.get("Error", {}).get("Code", ""))


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket/prefix`."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise ValueError(f"adapter store URL {url!r} is not s3://bucket/prefix; fix it")
    prefix = prefix.strip("/")
    return bucket, prefix + "/" if prefix else ""


class Bucket:
    """The registry's keys in one bucket, with a client each for polls, metadata and files."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        self.name, self.root = parse_url(url)
        self.where = f"s3://{self.name}/{self.root}"
        # Path-style addressing: MinIO, Ceph and the like are rarely set up with a DNS name
        # per bucket, which virtual-host style (the AWS default) needs.
        style = Config(s3={"addressing_style": "path"}) if endpoint_url else Config()
        session = boto3.session.Session()
        self.quick, self.brief, self.bulk = (
            session.client("s3", endpoint_url=endpoint_url, config=config.merge(style))
            for config in (QUICK, BRIEF, BULK)
        )
        self._conditions_supported = True

    @contextmanager
    def calls(self, what: str) -> Iterator[None]:
        """Turn boto errors into RegistryUnavailable (retry later) or RegistryError (fix it)."""
        try:
            yield
        except UNREACHABLE as err:
            raise RegistryUnavailable(f"cannot reach {self.where} while {what}: {err}") from err
        except ClientError as err:
            code, message = error_code(err), err.response.get("Error", {}).get("Message", "")
            if status(err) >= 500 or code in BUSY_CODES:
                raise RegistryUnavailable(f"{self.where} is busy ({code}) while {what}") from err
            raise RegistryError(
                f"{self.where} refused {what}: {code} {message}; check the bucket name and"
                " that the AWS credentials may list, read, write and delete under it"
            ) from err
        except BotoCoreError as err:  # no credentials, no region, a checksum mismatch
            raise RegistryError(
                f"cannot use {self.where} while {what}: {err}; configure AWS credentials"
                " (environment, ~/.aws, or an instance role) and the endpoint"
            ) from err

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object under `prefix` (relative to the root), in key order."""
        pages = self.brief.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=self.root + prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(self.root) :]
                yield StoredObject(key, item["Size"], item["ETag"], item["LastModified"])

    def read(
        self, key: str, limit: int, quick: bool = False, **conditions
    ) -> tuple[bytes, str] | None:
        """(at most `limit` bytes, ETag) of an object, or None when there is no such key."""
        client = self.quick if quick else self.brief
        try:
            answer = client.get_object(Bucket=self.name, Key=self.root + key, **conditions)
        except ClientError as err:
            # The code, not the status: a wrong endpoint or a proxy answers 404 as well.
            if error_code(err) == "NoSuchKey":
                return None
            raise
        with answer["Body"] as body:
            return body.read(limit), answer["ETag"]

    def put(self, key: str, body: bytes | BinaryIO, client=None) -> str:
        """Write one object in a single PUT (up to 5 GB: adapters are megabytes); its ETag."""
        client = client or self.bulk
        return client.put_object(Bucket=self.name, Key=self.root + key, Body=body)["ETag"]

    def put_if(self, key: str, body: bytes, etag: str | None, lost: str) -> str:
        """PUT only if the object still has `etag` (or, for None, does not exist yet)."""
        if not self._conditions_supported:
            return self.put(key, body, self.brief)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            answer = self.brief.put_object(
                Bucket=self.name, Key=self.root + key, Body=body, **condition
            )
            return answer["ETag"]
        except ClientError as err:
            if status(err) in RACE_STATUS:
                stored = self.read(key, len(body) + 1)
                if stored is not None and stored[0] == body:
                    return stored[1]  # a retried PUT whose first attempt landed: ours won
                raise RegistryError(lost) from err
            if status(err) != 501 and error_code(err) != "NotImplemented":
                raise
        # An S3-compatible store without conditional writes: a plain PUT still replaces the
        # object atomically; only the check against a concurrent writer is lost.
        log.warning("%s does not support conditional writes; writing unconditionally", self.where)
        self._conditions_supported = False
        return self.put(key, body, self.brief)

    def download(self, key: str, file: BinaryIO, limit: int) -> tuple[int, str]:
        """Stream an object into `file`, stopping after `limit` + 1 bytes; (size, sha256)."""
        answer = self.bulk.get_object(Bucket=self.name, Key=self.root + key)
        digest, size = hashlib.sha256(), 0
        with answer["Body"] as body:
            while size <= limit and (chunk := body.read(min(1 << 20, limit + 1 - size))):
                digest.update(chunk)
                file.write(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def delete(self, keys: list[str]) -> None:
        """Delete objects, 1000 a request (the S3 limit); missing ones are fine."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.root + key} for key in keys[start : start + 1000]]
            answer = self.brief.delete_objects(
                Bucket=self.name, Delete={"Objects": batch, "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise RegistryError(
                    f"{self.where} refused to delete {first.get('Key')}: {first.get('Code')};"
                    " check that the credentials may delete under it"
                )
