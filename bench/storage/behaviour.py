"""What the store answers where a backend must know: errors, ranges, ETags and checksums."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.storage.clients import BUCKET, CREDENTIALS, RANGE, SMALL, client_config, make_client


def answer(call: Callable[[], Any]) -> str:
    """``200``, or the status and error code of the ClientError ``call`` raised."""
    try:
        response = call()
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        code = error.response["Error"].get("Code")
        if code == str(status):  # botocore's stand-in when the answer had no body
            return f"{status}, no body (so no error code)"
        return f"{status} {code}"
    return str(response["ResponseMetadata"]["HTTPStatusCode"])


def corrupting_client(endpoint: str, checksum_calculation: str) -> Any:
    """A client whose PutObject bodies get one bit flipped after they were signed.

    ``when_required`` sends only the signed payload hash (X-Amz-Content-SHA256);
    ``when_supported`` (botocore's default) adds an x-amz-checksum-crc32 header.
    """
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=client_config().merge(Config(request_checksum_calculation=checksum_calculation)),
    )

    def corrupt(request: Any, **_: Any) -> None:
        request.body.seek(0)
        data = request.body.read()
        request.body = io.BytesIO(bytes([data[0] ^ 1]) + data[1:])

    client.meta.events.register("before-send.s3.PutObject", corrupt)
    return client


def behaviour(endpoint: str, data: bytes) -> list[str]:
    client = make_client(endpoint)
    client.put_object(Bucket=BUCKET, Key="quirks/object", Body=data)
    lines = [
        f"  {question:52} {result}"
        for question, result in (
            ("get, missing key", answer(lambda: client.get_object(Bucket=BUCKET, Key="none"))),
            ("head, missing key", answer(lambda: client.head_object(Bucket=BUCKET, Key="none"))),
            ("get, missing bucket", answer(lambda: client.get_object(Bucket="nobucket", Key="x"))),
            ("put, missing bucket", answer(partial(client.put_object, Bucket="nobucket", Key="x"))),
            ("head_bucket, missing bucket", answer(lambda: client.head_bucket(Bucket="nobucket"))),
            ("create_bucket, existing", answer(lambda: client.create_bucket(Bucket=BUCKET))),
            (
                'create_bucket "ab" (2 characters)',
                answer(lambda: client.create_bucket(Bucket="ab")),
            ),
        )
    ]
    for header in (
        RANGE,
        "bytes=-100",
        f"bytes={SMALL - 100}-",
        f"bytes={SMALL - 1}-{SMALL + 500}",
        f"bytes={SMALL}-{SMALL + 10}",
        "bytes=5-2",
        "bytes=0-1,5-6",
    ):
        try:
            response = client.get_object(Bucket=BUCKET, Key="quirks/object", Range=header)
        except ClientError as error:
            result = f"{error.response['ResponseMetadata']['HTTPStatusCode']}"
            result += f" {error.response['Error']['Code']}"
        else:
            body = response["Body"].read()
            result = (
                f"{response['ResponseMetadata']['HTTPStatusCode']}"
                f" Content-Range {response.get('ContentRange', '-')}, {len(body)} bytes"
            )
        lines.append(f"  {'Range ' + header:52} {result}")

    etag = client.head_object(Bucket=BUCKET, Key="quirks/object")["ETag"].strip('"')
    lines.append(
        f"  {'ETag of a single put':52} "
        + ("MD5 of the body" if etag == hashlib.md5(data).hexdigest() else etag)
    )
    parts = [random.Random(2).randbytes(5 * 2**20) for _ in range(2)] + [b"tail"]
    transfer = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    client.upload_fileobj(io.BytesIO(b"".join(parts)), BUCKET, "quirks/multipart", Config=transfer)
    etag = client.head_object(Bucket=BUCKET, Key="quirks/multipart")["ETag"].strip('"')
    expected = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    lines.append(
        f"  {'ETag of a 3-part multipart upload':52} "
        + ("MD5 of the parts' MD5s, -3 (as AWS)" if etag == f"{expected}-3" else etag)
    )

    def sha256(body: bytes) -> str:
        return base64.b64encode(hashlib.sha256(body).digest()).decode()

    right = client.put_object(
        Bucket=BUCKET,
        Key="quirks/sha",
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256(data),
    )
    stored = client.head_object(Bucket=BUCKET, Key="quirks/sha", ChecksumMode="ENABLED")
    lines.append(
        f"  {'put, right ChecksumSHA256':52} {right['ResponseMetadata']['HTTPStatusCode']};"
        f" head (ChecksumMode=ENABLED) returns it: {stored.get('ChecksumSHA256') == sha256(data)}"
    )
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    # The last two: SeaweedFS here checks no signature (no identities are
    # configured); with one configured, a bad signature is refused and the
    # signed payload hash still goes unchecked (tried by hand).
    for label, key, arguments, corrupting in (
        ("put, wrong ChecksumSHA256", "sha-wrong", {"ChecksumSHA256": sha256(b"other")}, None),
        ("put, wrong ChecksumCRC32", "crc-wrong", {"ChecksumCRC32": "AAAAAA=="}, None),
        ("put, wrong Content-MD5", "md5-wrong", {"ContentMD5": wrong_md5}, None),
        ("body changed after signing, signed hash only", "flip-sigv4", {}, "when_required"),
        ("body changed after signing, default CRC32 too", "flip-crc32", {}, "when_supported"),
    ):
        sender = corrupting_client(endpoint, corrupting) if corrupting else client
        key = f"quirks/{key}"
        result = answer(partial(sender.put_object, Bucket=BUCKET, Key=key, Body=data, **arguments))
        try:
            kept = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except ClientError:
            result += "; nothing stored"
        else:
            result += "; stored " + ("intact" if kept == data else "CORRUPTED")
        lines.append(f"  {label:52} {result}")
    return lines
