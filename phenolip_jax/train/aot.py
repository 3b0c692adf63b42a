"""Ahead-of-time compilation of a train step for a TPU slice, from any host (libtpu's compiler, no TPU).

`topology_mesh` describes the slice's chips (jax.experimental.topologies); `compile_report` compiles the
step built by `train.build.build_step` for abstract inputs and reads XLA's memory and cost analyses:
per-chip memory against HBM, FLOPs and bytes per chip per step, and a roofline bound on the step time.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from phenolip_jax.train import build as build_lib
from phenolip_jax.train import mesh as mesh_lib


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip peak dense bf16 FLOP/s, HBM capacity and HBM bandwidth."""

    peak_flops: float
    hbm_bytes: float
    hbm_bandwidth: float


# Source: Google Cloud TPU documentation, system architecture pages (per chip, bf16 dense).
CHIPS: dict[str, Chip] = {
    "v4": Chip(peak_flops=275e12, hbm_bytes=32 * 2**30, hbm_bandwidth=1.2e12),
    "v5e": Chip(peak_flops=197e12, hbm_bytes=16 * 2**30, hbm_bandwidth=0.82e12),
    "v5p": Chip(peak_flops=459e12, hbm_bytes=95 * 2**30, hbm_bandwidth=2.76e12),
}

# v4 chips hold two TensorCores that are described as two devices unless the slice is asked for in megacore
# mode (one device per chip), which is how v4 trains and what jax's TPU meshes require.
_TOPOLOGY_ARGS: dict[str, dict[str, Any]] = {"v4": dict(chip_config_name="megacore")}

# What to turn when the step does not fit, named as config fields.
FIT_KNOBS = ("config.data.batch_size (or data.terms_per_batch for stage 1; smaller)",
             "config.mesh.fsdp (shard parameters and optimizer state over more chips)",
             "the remat policy (config.model.remat / config.text.remat: recompute activations)",
             "config.loss.chunk (blockwise contrastive loss, no [B, B] logits)")


def chip_of(topology: str) -> tuple[str, Chip]:
    """('v5p', Chip) for a topology name such as 'v5p:4x4x4'."""
    generation = topology.split(":")[0].lower()
    if generation not in CHIPS:
        raise ValueError(f"--aot={topology!r}: the TPU generation must be one of {sorted(CHIPS)} (e.g. v5p:2x2x1)")
    return generation, CHIPS[generation]


def topology_mesh(topology: str, data: int = -1, fsdp: int = 1) -> jax.sharding.Mesh:
    """The ('data', 'fsdp') mesh over the chips of a TPU slice described on this host (config.mesh sizes)."""
    from jax.experimental import topologies

    generation, _ = chip_of(topology)
    try:
        desc = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                            **_TOPOLOGY_ARGS.get(generation, {}))
    except Exception as e:  # libtpu missing or an unknown shape: one line naming the flag
        raise ValueError(f"--aot={topology!r}: no TPU topology description ({e}); install libtpu "
                         "(pip install 'jax[tpu]==0.10.2') and use e.g. v5p:2x2x1, v5e:2x4, v4:2x2x2") from e
    return mesh_lib.make_mesh(data, fsdp, devices=list(desc.devices))


@dataclasses.dataclass(frozen=True)
class AotReport:
    """What one AOT compile measured, per chip, and the roofline figures derived from it."""

    topology: str
    chips: int
    argument_bytes: float
    temp_bytes: float
    output_bytes: float
    alias_bytes: float
    hbm_bytes: float
    flops: float
    bytes_accessed: float
    compile_s: float
    peak_flops: float
    hbm_bandwidth: float
    kernel_calls: int  # Mosaic (Pallas) kernel calls in the compiled program, e.g. splash attention

    @property
    def total_bytes(self) -> float:
        """Peak live bytes per chip: arguments + temporaries + outputs not aliased to (donated) arguments."""
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

    @property
    def fits(self) -> bool:
        """Whether the step's memory fits in the chip's HBM."""
        return self.total_bytes <= self.hbm_bytes

    @property
    def step_time_bound_s(self) -> float:
        """Roofline lower bound on the step time: the slower of compute at peak and HBM traffic at bandwidth."""
        return max(self.flops / self.peak_flops, self.bytes_accessed / self.hbm_bandwidth)

    @property
    def mfu_ceiling(self) -> float:
        """FLOP utilisation at the roofline bound (XLA's FLOPs, recomputation included)."""
        return self.flops / self.peak_flops / self.step_time_bound_s if self.step_time_bound_s else 0.0

    @property
    def bound(self) -> str:
        """'compute' or 'memory': which roof sets the bound."""
        return "compute" if self.flops / self.peak_flops >= self.bytes_accessed / self.hbm_bandwidth else "memory"


def compile_report(topology: str, step: build_lib.ShardedStep, batch: dict[str, jax.ShapeDtypeStruct]
                   ) -> AotReport:
    """Compiles the step for abstract inputs on the topology's mesh and reads XLA's analyses."""
    _, chip = chip_of(topology)
    compiled, seconds = build_lib.compile_step(step, batch)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: one dict per program
    return AotReport(
        topology=topology, chips=step.mesh.size,
        argument_bytes=float(mem.argument_size_in_bytes), temp_bytes=float(mem.temp_size_in_bytes),
        output_bytes=float(mem.output_size_in_bytes), alias_bytes=float(mem.alias_size_in_bytes),
        hbm_bytes=chip.hbm_bytes, flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)), compile_s=seconds,
        peak_flops=chip.peak_flops, hbm_bandwidth=chip.hbm_bandwidth,
        kernel_calls=compiled.as_text().count("tpu_custom_call"))


def format_report(r: AotReport, what: str = "") -> str:
    """Human-readable lines of a report (what: a label such as the config and batch)."""
    gib = 2.0**30
    lines = [
        f"AOT {what} on {r.topology} ({r.chips} chips), compiled in {r.compile_s:.1f}s",
        f"  memory per chip: args {r.argument_bytes / gib:.2f} GiB + temps {r.temp_bytes / gib:.2f} GiB + "
        f"outputs {r.output_bytes / gib:.2f} GiB - aliased {r.alias_bytes / gib:.2f} GiB = "
        f"{r.total_bytes / gib:.2f} GiB of {r.hbm_bytes / gib:.0f} GiB HBM ({100 * r.total_bytes / r.hbm_bytes:.0f}%)",
        f"  per chip per step: {r.flops / 1e12:.2f} TFLOP, {r.bytes_accessed / 1e9:.1f} GB accessed (XLA cost analysis; "
        f"{r.kernel_calls} Pallas kernel calls)",
        f"  roofline: step >= {1e3 * r.step_time_bound_s:.1f} ms ({r.bound}-bound; peak {r.peak_flops / 1e12:.0f} "
        f"TFLOP/s, {r.hbm_bandwidth / 1e12:.2f} TB/s); MFU ceiling {100 * r.mfu_ceiling:.0f}%",
    ]
    if not r.fits:
        lines.append(f"  DOES NOT FIT: {r.total_bytes / gib:.2f} GiB > {r.hbm_bytes / gib:.0f} GiB per chip; turn: "
                     + "; ".join(FIT_KNOBS))
    return "\n".join(lines)


def as_dict(r: AotReport) -> dict[str, Any]:
    """The report's fields and derived figures as a JSON-able dict."""
    return dict(dataclasses.asdict(r), total_bytes=r.total_bytes, fits=r.fits, step_time_bound_s=r.step_time_bound_s,
                mfu_ceiling=r.mfu_ceiling, bound=r.bound)
