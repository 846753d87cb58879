"""Behaviour that needs a real server process and real sockets."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

from conftest import LiveServer, corpus_images, png_bytes, start_runserver, stop
from images.compression import pixels_equal


def request(
    server: LiveServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_an_oversized_body_is_refused_from_content_length_before_it_is_sent(live_server_process):
    port = live_server_process.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /collections/images?deviceId=d&timestamp=2024-01-01T00:00:00Z HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 999999999999\r\n\r\n"
        )
        # Not one byte of body is sent: the answer must come anyway.
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.decode("latin-1").partition("\r\n\r\n")
    assert " 413 " in head.split("\r\n")[0]
    assert "Content-Type: application/json" in head
    assert "detail" in json.loads(body)["errors"]


def test_twenty_concurrent_identical_uploads_store_one_row(live_server_process):
    image = png_bytes(size=(200, 150), seed=77)
    path = "/collections/images?deviceId=concurrent&timestamp=2024-05-05T05:05:05Z"
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def upload() -> None:
        status, _, body = request(
            live_server_process, "POST", path, image, {"Content-Type": "image/png"}
        )
        with lock:
            results.append((status, json.loads(body).get("id", "")))

    threads = [threading.Thread(target=upload) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in results)
    assert statuses.count(201) == 1
    assert statuses.count(200) == 19
    assert len({image_id for _, image_id in results}) == 1
    [(count,)] = live_server_process.query(
        "SELECT COUNT(*) FROM images_image WHERE device_id = ?", ("concurrent",)
    )
    assert count == 1


def test_identical_uploads_through_two_server_processes_store_one_row(tmp_path):
    first = start_runserver(tmp_path)
    second = start_runserver(tmp_path, database_url=first.database_url)
    try:
        image = png_bytes(size=(300, 200), seed=78)
        path = "/collections/images?deviceId=two-processes&timestamp=2024-05-05T05:05:05Z"
        statuses: list[int] = []

        def upload(server: LiveServer) -> None:
            status, _, _ = request(server, "POST", path, image, {"Content-Type": "image/png"})
            statuses.append(status)

        threads = [threading.Thread(target=upload, args=(s,)) for s in [first, second] * 5]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200] * 9 + [201]
        [(count,)] = first.query(
            "SELECT COUNT(*) FROM images_image WHERE device_id = ?", ("two-processes",)
        )
        assert count == 1
    finally:
        stop(first.process)
        stop(second.process)


def test_every_corpus_image_round_trips_over_http_pixel_identical(live_server_process):
    for index, path in enumerate(corpus_images(frozenset({".png", ".jpg", ".jpeg"}))):
        sent = path.read_bytes()
        content_type = "image/png" if path.suffix == ".png" else "image/jpeg"
        status, headers, body = request(
            live_server_process,
            "POST",
            f"/collections/images?deviceId=corpus&timestamp=2024-01-01T00:00:{index:02d}Z",
            sent,
            {"Content-Type": content_type, "Accept": "application/json"},
        )
        assert status == 201, (path.name, body)
        meta = json.loads(body)
        assert meta["storedSize"] <= len(sent)
        status, headers, stored = request(live_server_process, "GET", headers["Location"])
        assert status == 200
        assert headers["Content-Type"] == content_type
        assert pixels_equal(stored, sent), path.name
