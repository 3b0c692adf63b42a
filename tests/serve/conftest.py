"""A tiny run served in-process: the Engine on the session's tiny stage-2 run, and a live uvicorn server on a free
port, plus the bad uploads item 4 names (a non-image, a corrupt DICOM, a 50 MB file)."""
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from tests.tasks.conftest import load_config

FIFTY_MB = 50 * 1_000_000


def serve_config(checkpoint, candidates, **kw):
    """configs/serve.py pointed at a run, with small batches."""
    cfg = load_config("serve")
    cfg.update(dict(checkpoint=checkpoint, candidates=candidates, top_k=5, batch_size=4, port=0), **kw)
    return cfg


@pytest.fixture(scope="session")
def demo_ids(tiny_demo_dir):
    """The 8 phenotypes of the tiny demo (the images' own)."""
    with open(os.path.join(tiny_demo_dir, "phenotypes.json")) as f:
        return [p["hpo_id"] for p in json.load(f)]


@pytest.fixture(scope="session")
def candidates_file(demo_ids, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve_candidates") / "candidates.txt"
    path.write_text("\n".join(demo_ids) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def demo_images(tiny_demo_dir):
    """Three demo test images (paths)."""
    folder = os.path.join(tiny_demo_dir, "images", "test")
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))[:3]]


@pytest.fixture(scope="session")
def engine(stage2_workdir, candidates_file, tmp_path_factory):
    from phenolip_jax.serve.engine import Engine

    return Engine(serve_config(stage2_workdir, candidates_file), str(tmp_path_factory.mktemp("serve_workdir")))


def corrupt_dicom() -> bytes:
    """A DICOM file whose pixel data stops short of its rows x columns."""
    from tests.data.test_dicom import STORED, dicom_bytes

    return dicom_bytes(np.tile(STORED, (8, 8)))[:-300]


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory):
    """{kind: path} of the three bad uploads: a text file, a corrupt DICOM, a 50 MB file (a PNG header, then
    zeros)."""
    folder = tmp_path_factory.mktemp("bad_uploads")
    paths = dict(text=folder / "notes.txt", dicom=folder / "broken.dcm", large=folder / "huge.png")
    paths["text"].write_text("this is a note, not an image\n")
    paths["dicom"].write_bytes(corrupt_dicom())
    with open(paths["large"], "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(FIFTY_MB)
    return {k: str(v) for k, v in paths.items()}


@contextlib.contextmanager
def running_server(engine):
    """Yields http://127.0.0.1:PORT/ of a uvicorn server running the engine's app in a thread."""
    import uvicorn

    from phenolip_jax.serve import server

    sock = server.bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(server.create_app(engine), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs=dict(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield server.url_of(sock)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def live_url(engine):
    """The tiny run served on a free port for the session."""
    with running_server(engine) as url:
        yield url


def multipart(fields, files):
    """(body, content type) of a multipart/form-data request: `fields` {name: text}, `files` [(name, bytes)]."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http(url, data=None, content_type=None):
    """(status, body bytes, headers) of a GET, or of a POST when data is given; 4xx/5xx answers included."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def post_case(base_url, files, **fields):
    """(status, JSON answer) of POST /api/predict with files [(name, bytes)] and form fields."""
    body, ctype = multipart(fields, files)
    status, raw, _ = http(base_url + "api/predict", body, ctype)
    return status, json.loads(raw)
