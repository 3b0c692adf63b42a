"""Multi-process stage 2 on CPU: 2 processes x 4 devices against 1 process x 8 devices.

What the pipeline guarantees (checked below): process p's batch b is rows p, p + P, p + 2P, ... of the
1-process batch b, so the 2-process global batch holds the same pairs in another order. Contrastive
losses are invariant to a permutation of the batch, so with deterministic augmentation and no dropout
the losses match. Random crops do not match yet: grain seeds `random_map` by each process's local index.
The end-to-end runs (4 launches, one of them with parameters sharded over mesh.fsdp=2) are marked slow.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.scale import multiprocess as mp

STEPS = 4


def load_tiny_config(path: Path):
    """get_config() of a generated tiny config file."""
    from phenolip_jax.config_lib import load_config

    return load_config(str(path))


@pytest.fixture(scope="module")
def tiny_config(tiny_bert_dir, tiny_demo_dir, tmp_path_factory) -> Path:
    return mp.write_tiny_stage2_config(tmp_path_factory.mktemp("cfg") / "tiny_stage2.py", tiny_bert_dir,
                                       tiny_demo_dir)


@pytest.fixture(scope="module")
def one_run(tiny_config, tmp_path_factory) -> Path:
    """A 1-process run in this pytest process (8 devices), the reference of the multi-process runs."""
    from phenolip_jax.tasks import stage2

    one = tmp_path_factory.mktemp("runs") / "one"
    stage2.run(load_tiny_config(tiny_config), str(one))
    return one


@pytest.fixture(scope="module")
def runs(tiny_config, one_run):
    """The 1-process run; a 2-process run of 2 steps, then resumed to 4."""
    one = one_run
    two = one.parent / "two"
    first = mp.run_main(tiny_config, two, num_processes=2, devices_per_process=4,
                        overrides=("--config.total_steps=2",))
    second = mp.run_main(tiny_config, two, num_processes=2, devices_per_process=4,
                         overrides=(f"--config.total_steps={STEPS}",))
    return dict(one=one, two=two, first=first, second=second)


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(runs):
    one = mp.read_metrics(runs["one"])
    assert sorted(one) == list(range(1, STEPS + 1))
    assert (runs["two"] / "metrics.jsonl").exists(), mp.describe(*runs["first"])
    two = mp.read_metrics(runs["two"])
    # One metrics file, written by process 0 only: steps 1-2 from the first launch, 3-4 from the resumed one.
    assert sorted(two) == list(range(1, STEPS + 1)), mp.describe(*runs["second"])
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(two[step]["loss"], one[step]["loss"], rtol=1e-4, err_msg=f"step {step}")
        np.testing.assert_allclose(two[step]["grad_norm"], one[step]["grad_norm"], rtol=1e-3)
    # The losses move, so the match above is not a constant being compared with itself.
    assert len({round(one[s]["loss"], 4) for s in one}) == STEPS
    codes, outputs = runs["second"]
    assert "resumed from" in outputs[0] and "at step 2" in outputs[0], mp.describe(codes, outputs)


@pytest.mark.slow
def test_two_process_checkpoint_is_one_collective_save(runs):
    ckpt = runs["two"] / "checkpoints"
    assert sorted(int(d) for d in os.listdir(ckpt) if d.isdigit()) == [2, 4]
    step2 = ckpt / "2"
    assert (step2 / "commit_success.txt").exists() or (step2 / "_CHECKPOINT_METADATA").exists()
    # Both processes wrote their shards of the state into the same checkpoint, and each its data iterator.
    state_files = os.listdir(step2 / "state")
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(state_files), state_files
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(step2 / "data"))
    for i in range(2):
        json.loads((step2 / "data" / f"process_{i}-of-2.json").read_text())
    # Only process 0 wrote model_config.json / metrics.jsonl; no per-process copies appear.
    assert not [f for f in os.listdir(runs["two"]) if f.startswith("metrics") and f != "metrics.jsonl"]


@pytest.mark.slow
def test_two_process_run_finishes_with_evaluation(runs):
    codes, outputs = runs["second"]
    assert codes == [0, 0], mp.describe(codes, outputs)
    assert (runs["two"] / "eval.json").exists()


@pytest.fixture(scope="module")
def fsdp_run(tiny_config, one_run):
    """A 2-step run of 2 processes x 1 device with parameters sharded over mesh.fsdp=2 (and most arrays
    above the size floor): its final evaluation and params/ save read arrays whose halves live on different
    processes. (With 4 devices per process an fsdp=2 pair is two devices of one process: each process then
    holds whole arrays, and jax.device_get works, so that layout would not test this.)"""
    workdir = one_run.parent / "fsdp"
    result = mp.run_main(tiny_config, workdir, num_processes=2, devices_per_process=1, timeout=900.0,
                         overrides=("--config.mesh.fsdp=2", "--config.mesh.fsdp_min_size=256",
                                    "--config.total_steps=2"))
    return workdir, result


@pytest.mark.slow
def test_two_process_fsdp_run_evaluates_and_saves_params(fsdp_run, one_run):
    import jax

    from phenolip_jax import artifacts

    workdir, (codes, outputs) = fsdp_run
    assert codes == [0, 0], mp.describe(codes, outputs)
    one, two = mp.read_metrics(one_run), mp.read_metrics(workdir)
    assert sorted(two) == [1, 2]
    for step in two:  # sharding the parameters changes where they live, not the numbers
        np.testing.assert_allclose(two[step]["loss"], one[step]["loss"], rtol=1e-4, err_msg=f"step {step}")
    # params/ (one collective save of the sharded params) reads back whole in this process and holds the
    # final train state's values (the step-2 checkpoint, also written sharded).
    saved = artifacts.load_params(str(workdir / "params"))
    state = artifacts.restore_state_params(str(workdir / "checkpoints" / "2"))
    leaves = jax.tree_util.tree_leaves_with_path(state)
    assert jax.tree.structure(saved) == jax.tree.structure(state) and len(leaves) > 10
    for (path, want), got in zip(leaves, jax.tree.leaves(saved)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))
    # The evaluation gathered the sharded params on each process and wrote the usual figures.
    ev = json.loads((workdir / "eval.json").read_text())
    assert sorted(ev) == sorted(json.loads((one_run / "eval.json").read_text()))
    assert all(0.0 <= ev[k] <= 1.0 for k in ev if "_r@" in k), ev


def _batches(cfg, tokenizer, onto, records, image_root, process_index, process_count, n=3):
    from phenolip_jax.data import pipeline
    from phenolip_jax.tasks import stage2

    pcfg = stage2.pipeline_config(cfg)
    pcfg["per_host_batch_size"] = cfg.data.batch_size // process_count
    it = iter(pipeline.make_train_dataset(pcfg, records, tokenizer, onto, cfg.seed, image_root=image_root,
                                          process_index=process_index, process_count=process_count))
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module")
def data_parts(tiny_config):
    from phenolip_jax import artifacts
    from phenolip_jax.tasks import common, stage2

    cfg = load_tiny_config(tiny_config)
    onto = common.load_ontology_from_config(cfg.ontology)
    tokenizer = artifacts.load_tokenizer(cfg.text.hf_dir)
    splits, image_root = stage2.load_records(cfg, onto, tokenizer)
    return cfg, tokenizer, onto, splits["train"], image_root


def test_process_shards_interleave_the_one_process_batch(data_parts):
    cfg, tokenizer, onto, records, root = data_parts
    one = _batches(cfg, tokenizer, onto, records, root, 0, 1)
    parts = [_batches(cfg, tokenizer, onto, records, root, p, 2) for p in range(2)]
    for b in range(len(one)):
        for p in range(2):
            for key, value in one[b].items():
                np.testing.assert_array_equal(parts[p][b][key], value[p::2], err_msg=f"batch {b} {key}")


def test_random_crops_do_not_depend_on_process_count(data_parts):
    cfg, tokenizer, onto, records, root = data_parts
    cfg = cfg.copy_and_resolve_references()
    cfg.data.crop_scale = (0.5, 1.0)
    one = _batches(cfg, tokenizer, onto, records, root, 0, 1, n=1)
    part = _batches(cfg, tokenizer, onto, records, root, 1, 2, n=1)
    np.testing.assert_array_equal(part[0]["image"], one[0]["image"][1::2])
