"""Packing on Apache Beam: the packer's flags and output (`packing.json` included), its work spread over workers.

    python -m phenolip_jax.data.beam_packing --input='shards/pmc-{000..999}.tar' --format=webdataset \
        --output=packed/ --num_shards=512 [--image_size=256 --image_format=jpeg --tokenizer=DIR --max_len=256] \
        [--runner=direct --num_workers=8]                  (worker processes on this machine; the default)
        [--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp --num_workers=50 ...]

Every flag of `python -m phenolip_jax.data.packing` means the same here; flags it does not know go to Beam's
PipelineOptions (Dataflow, Flink, Spark: their own options), and one Beam does not know either is refused.
`--num_workers` is the DirectRunner's worker processes, or Beam's `--num_workers` for any other runner.

Why two pipelines with a step on the driver between them (data/pack_steps.py has the steps): the one-process
packer's results hang on order. A duplicate is the second (image, caption) of the input, `image_id` and
`caption_id` number images and captions by first appearance per split, and the report's examples are the first
five of each reason. The costly work has no such dependence: decoding each image to validate it, and reading,
resizing and encoding it into its shard. So pipeline 1 reads each input file (metadata only) and probes each
record (decode + token count) on the workers; the driver replays the files in input order through the packer's own
validation with those probes standing in for its decodes, numbers the ids and lays out the shards exactly as the
packer does (metadata only: 62 microseconds a record, benchmarks/pack_rate.py); pipeline 2 writes each shard. The shards
therefore hold the same entries as the one-process packer's, shard for shard and in the same order, though only
"the same records per split" is promised (tests/data/test_beam_packing.py compares them as multisets). The driver
holds the kept records' metadata, as the one-process packer does.

array_record's own Beam sink (`array_record.beam.arrayrecordio.WriteToArrayRecord`) is not used: it writes local
disks only, and Beam's file sink chooses which record lands in which shard, whereas this packer's layout is
fixed by the driver. Step 4 writes each shard with ArrayRecordWriter into a local file, then moves it into
--output or copies it to a bucket.
"""
from __future__ import annotations

import sys
from typing import Sequence

import apache_beam as beam
from absl import flags
from apache_beam.options.pipeline_options import PipelineOptions

from phenolip_jax import config_lib
from phenolip_jax.data import pack_steps, packing, paths
from phenolip_jax.ontology import load_ontology


class BeamEngine:
    """pack_steps' engine on Beam: steps 1-2 as one pipeline, step 4 as another."""

    def __init__(self, options: PipelineOptions):
        self.options = options

    def read(self, job: pack_steps.ReadJob) -> None:
        """Reads files in parallel, then probes their records in parallel (one big file is spread too)."""
        with beam.Pipeline(options=self.options) as p:
            _ = (p | "files" >> beam.Create(range(len(job.files)))
                 | "spread files" >> beam.Reshuffle()
                 | "read" >> beam.FlatMap(pack_steps.read_step, job)
                 | "spread records" >> beam.Reshuffle()
                 | "probe" >> beam.Map(pack_steps.probe_step, job)
                 | "by file" >> beam.GroupByKey()
                 | "write probes" >> beam.Map(pack_steps.write_probes, job))

    def write(self, job: pack_steps.WriteJob) -> None:
        """Writes the shards in parallel, one worker each."""
        with beam.Pipeline(options=self.options) as p:
            _ = (p | "shards" >> beam.Create(job.names)
                 | "spread shards" >> beam.Reshuffle()
                 | "write" >> beam.Map(pack_steps.write_step, job))


def pipeline_options(runner: str, num_workers: int, beam_args: Sequence[str]) -> PipelineOptions:
    """Beam's options: `direct` runs `num_workers` processes here; another runner gets `beam_args` as given."""
    if runner == "direct":
        args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                f"--direct_num_workers={num_workers}",
                "--default_sdk_harness_log_level=WARNING", *beam_args]  # workers' INFO lines drown the report
    else:
        args = [f"--runner={runner}", *([f"--num_workers={num_workers}"] if num_workers else []), *beam_args]
    options = PipelineOptions(args)
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    if unknown:  # Beam would drop them with a warning: a mistyped --num_shard must not pack one shard
        raise config_lib.UserError(f"unknown flags: {', '.join('--' + u for u in sorted(unknown))} (neither the "
                                   "packer's nor a Beam pipeline option)")
    return options


def main(argv: Sequence[str]) -> None:
    """Packs on Beam: read, validate, write the shards and packing.json (bad flags: one line, exit 2)."""
    f = flags.FLAGS
    try:
        packing.check_input_flags(f.manifest, f.input, f.format)
        options = pipeline_options(f.runner, f.num_workers, argv[1:])
        tokenizer, step = packing.step_format(f)
        # --manifest is JSONL (or PhenoBench CSV) read by the jsonl reader, as python -m ...packing reads it
        what = {"manifest": paths.absolute(f.manifest)} if f.manifest else None
        pack_steps.pack(BeamEngine(options), f.manifest or f.input, f.format or "jsonl", f.output, load_ontology(),
                        options=packing.read_options(f), num_shards=f.num_shards, tokenizer=tokenizer,
                        max_len=f.max_len, max_hpo=f.max_hpo, max_side=f.max_side, strict=f.strict,
                        allow_absolute=f.allow_absolute_paths, step=step, what=what)
    except config_lib.UserError as e:  # a mistake in the flags or the input's layout: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def define_flags() -> None:
    """The packer's flags, and the runner's."""
    packing.define_flags()
    flags.DEFINE_string("runner", "direct", "'direct' (worker processes on this machine) or a Beam runner: "
                        "DataflowRunner, FlinkRunner, SparkRunner, PortableRunner")
    flags.DEFINE_integer("num_workers", 0, "worker processes with --runner=direct (0: one per CPU core); Beam's "
                         "--num_workers for another runner (0: its default)")


if __name__ == "__main__":
    define_flags()
    try:
        rest = flags.FLAGS(sys.argv, known_only=True)  # what the packer does not know is Beam's
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main(rest)
