"""The API over real HTTP (a uvicorn server on a free port): the page, a case's terms and download, and item 4's
bad inputs (a non-image, a corrupt DICOM, a 50 MB file), each a clear message, with the server still serving."""
import json
import os
import subprocess
import sys
import time
import urllib.parse
from http.client import HTTPConnection

import pytest

from phenolip_jax import config_checks, config_lib
from phenolip_jax.serve import server
from phenolip_jax.serve.engine import Upload
from tests.serve.conftest import FIFTY_MB, http, multipart, post_case, serve_config
from tests.tasks.conftest import REPO


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_page_info_case_and_download(live_url, engine, demo_images):
    status, body, headers = http(live_url)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'id="files"' in body and b"/api/predict" in body
    status, body, _ = http(live_url + "api/info")
    info = json.loads(body)
    assert status == 200 and info["candidates"] == 8 and info["organ_systems"] == engine.organ_systems
    files = [(os.path.basename(p), read(p)) for p in demo_images[:2]]
    status, case = post_case(live_url, files, note="a note", organ_system="")
    assert status == 200, case
    direct = engine.predict_case([Upload(n, d) for n, d in files])
    assert [im["predictions"] for im in case["images"]] == [im["predictions"] for im in direct["images"]]
    status, body, headers = http(urllib.parse.urljoin(live_url, case["download"]))
    name = f"case-{case['case_id']}.phenopacket.json"
    assert status == 200 and headers["content-disposition"] == f'attachment; filename="{name}"'
    assert json.loads(body)["id"] == case["case_id"] and json.loads(body)["phenotypicFeatures"]
    status, body, _ = http(live_url + "api/cases/" + case["case_id"])
    assert status == 200 and json.loads(body)["images"] == case["images"]


def test_bad_inputs_get_a_clear_message_and_the_server_keeps_serving(live_url, bad_files, demo_images):
    good = [(os.path.basename(demo_images[0]), read(demo_images[0]))]
    expected = {"text": (400, "notes.txt: not a readable image (no image format recognised)"),
                "dicom": (400, "broken.dcm: not a readable DICOM image"),
                "large": (413, "huge.png: 50.0 MB is over the limit of 20 MB per image (config.max_upload_mb)")}
    for kind, (code, message) in expected.items():
        path = bad_files[kind]
        status, answer = post_case(live_url, [(os.path.basename(path), read(path))])
        assert status == code and message in answer["error"], (kind, answer)
        assert [f["name"] for f in answer["files"]] == [os.path.basename(path)]
        status, answer = post_case(live_url, good)  # still serving
        assert status == 200 and answer["images"][0]["predictions"], answer
    status, answer = post_case(live_url, good, organ_system="HP:9999999")
    assert status == 422 and "HP:9999999" in answer["error"]
    status, answer = post_case(live_url, [])
    assert status == 400 and answer["error"].startswith("no image uploaded")
    status, body, _ = http(live_url + "api/cases/0123456789ab")
    assert status == 404 and "no case" in json.loads(body)["error"]


def test_an_oversized_request_is_refused_before_it_is_read(live_url):
    host, port = urllib.parse.urlsplit(live_url).netloc.split(":")
    conn = HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/predict")  # headers only: the server must answer without the body
    body, ctype = multipart({}, [])
    conn.putheader("Content-Type", ctype)
    conn.putheader("Content-Length", str(20 * FIFTY_MB))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413 and "per case (16 images of at most 20 MB)" in json.loads(answer.read())["error"]
    conn.close()
    assert http(live_url + "api/info")[0] == 200


def test_a_busy_port_or_a_bad_field_is_a_config_error_naming_it(stage2_workdir, live_url):
    busy = urllib.parse.urlsplit(live_url).port
    with pytest.raises(config_lib.UserError, match=f"config.port={busy} on config.host='127.0.0.1': cannot listen"):
        server.bind("127.0.0.1", busy)
    for field, value, message in (("max_upload_mb", 0.0, "config.max_upload_mb=0.0 must be > 0"),
                                  ("port", 70000, "config.port=70000 must be an integer in"),
                                  ("checkpoint", "", "config.checkpoint is empty")):
        cfg = serve_config(stage2_workdir, "")
        cfg[field] = value
        with pytest.raises(ValueError, match=message):
            config_checks.validate(cfg, 1)


def test_main_serves_a_run(stage2_workdir, candidates_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "-m", "phenolip_jax.main", "--config=configs/serve.py", "--config.port=0",
           f"--config.checkpoint={stage2_workdir}", f"--config.candidates={candidates_file}", f"--workdir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, url = time.time() + 300, None
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "serve exited before it printed its URL"
            if "open http://" in line:
                url = line.split("open ")[1].split()[0]
        status, body, _ = http(url + "api/info")
        assert status == 200 and json.loads(body)["candidates"] == 8
    finally:
        proc.terminate()
        proc.wait(timeout=30)
