"""phenolip_jax: PhenoLIP (phenotype-ontology knowledge in medical vision-language pretraining) in JAX/Flax."""
import glob
import os
import sys

_GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up on the PCI bus under Google's vendor id
_GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dri/renderD128")


def _accelerator_present() -> bool:
    """Whether this host may hold a TPU (a Google PCI device) or a GPU (NVIDIA / ROCm device files)."""
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor) as f:
                if f.read().strip() == _GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return any(os.path.exists(d) for d in _GPU_DEVICE_FILES)


def _cpu_only_without_accelerator() -> None:
    """JAX_PLATFORMS=cpu on a host with no TPU and no GPU, unless the user chose platforms or jax is loaded.

    With libtpu installed (the test requirements bring it for the TPU compile tests), JAX otherwise probes for a
    TPU at its first device query and prints `E0000 ... unexpected worker hostname` on every CPU command. On
    such a host the CPU is the only backend anyway, so nothing changes but the noise. PHENOLIP_KEEP_PLATFORMS=1
    leaves JAX to choose.
    """
    if "JAX_PLATFORMS" in os.environ or os.environ.get("PHENOLIP_KEEP_PLATFORMS") == "1" or "jax" in sys.modules:
        return
    if not _accelerator_present():
        os.environ["JAX_PLATFORMS"] = "cpu"


_cpu_only_without_accelerator()
