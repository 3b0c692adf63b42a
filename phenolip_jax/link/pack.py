"""The packer with a link step: read any format, link the captions to HPO, pack the linked records.

    python -m phenolip_jax.link.pack --input=MedPix-2-0 --format=medpix --output=packed/ --num_shards=4 \\
        --link=hybrid --link_encoder=workdirs/stage1 [every flag of python -m phenolip_jax.data.packing]

The records' `hpo_ids` are what they carried (none for ROCO or MedPix) followed by the linked ids. Where each id
came from is written beside the shards: `link_evidence.jsonl` (one row per record, in pack order: the record's
file and line, its caption, the linked ids and each mention's span, offsets, method, score and negation) and
`link_summary.json`; `packing.json` gains a `link` section (method, encoder, threshold, counts). It lives here
rather than in data/packing.py because the linker sits above the data layer.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from phenolip_jax import config_lib
from phenolip_jax.data import containers, formats, manifest, packing, paths
from phenolip_jax.link import corpus
from phenolip_jax.link.run import build_linker
from phenolip_jax.ontology import load_ontology


def link_config(method: str, encoder: str, threshold: float | None) -> Any:
    """configs/link.py with the packer's --link, --link_encoder and --link_threshold applied."""
    cfg = config_lib.load_config("link")
    if method not in config_lib.LINK_METHODS:
        raise config_lib.UserError(f"--link={method!r}: use one of {', '.join(config_lib.LINK_METHODS)}")
    if method != "lexical" and not encoder:
        raise config_lib.UserError(f"--link={method} needs --link_encoder=RUN (a stage-1 workdir)")
    cfg.method, cfg.encoder = method, encoder or ""
    if threshold is not None:
        cfg.threshold = float(threshold)
    return cfg


def pack_linked(f) -> dict:
    """Reads, validates, links and packs as the flags say (`f`: absl's FLAGS); returns packing.json."""
    packing.check_input_flags(f.manifest, f.input, f.format)
    onto = load_ontology()
    tokenizer, step = packing.step_format(f)
    common = dict(strict=f.strict, tokenizer=tokenizer, max_len=f.max_len, max_hpo=f.max_hpo,
                  allow_absolute=f.allow_absolute_paths)
    if f.manifest:
        root = f.image_root or paths.parent(f.manifest)
        kept, report = manifest.read_and_validate([f.manifest], onto, root, **common)
        what = {"manifest": paths.absolute(f.manifest)}
    else:
        kept, report, root = formats.read_and_validate_input(f.input, f.format, onto, packing.read_options(f),
                                                             progress=True, **common)
        what = {"input": f.input, "format": f.format}
    cfg = link_config(f.link, f.link_encoder, f.link_threshold)
    linker = build_linker(cfg, f.output)
    linked, rows, summary = corpus.link_records(kept, linker, "merge", int(cfg.chunk),
                                                corpus.ProgressLine(int(cfg.progress_every)))
    print(corpus.format_summary(summary), file=sys.stderr, flush=True)
    what["link"] = dict(method=linker.method, encoder=cfg.encoder, threshold=linker.threshold if linker.scorer
                        else None, captions=summary.get("captions"), linked=summary.get("linked"))
    print(report, file=sys.stderr)
    split_summary = packing.pack_records(linked, root, f.output, f.num_shards, max_side=f.max_side, step=step)
    containers.close_all()
    paths.write_text(paths.join(f.output, "link_evidence.jsonl"),
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    paths.write_text(paths.join(f.output, "link_summary.json"), json.dumps(summary, indent=1) + "\n")
    return packing.write_packing_info(f.output, what, split_summary, report, step)


def main(argv: Sequence[str]) -> None:
    """absl entry point: the packer's flags plus --link / --link_encoder / --link_threshold (mistakes: one line)."""
    from absl import flags

    del argv
    try:
        pack_linked(flags.FLAGS)
    except (config_lib.UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def define_flags() -> None:
    """The packer's flags and the link step's."""
    from absl import flags

    packing.define_flags()
    flags.DEFINE_enum("link", "lexical", list(config_lib.LINK_METHODS), "how captions are linked to HPO (configs/link.py)")
    flags.DEFINE_string("link_encoder", "", "stage-1 workdir for --link=encoder / hybrid")
    flags.DEFINE_float("link_threshold", None, "encoder cosine threshold (default: configs/link.py's)")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
