"""Ways to damage a checkpoint step dir on disk, as a failing disk or an interrupted copy would."""
import os


def largest_array_file(step_dir: str) -> str:
    """The biggest file under `<step>/state`: the tensorstore chunk file holding most array bytes."""
    files = [os.path.join(root, f) for root, _, names in os.walk(os.path.join(step_dir, "state")) for f in names]
    return max(files, key=os.path.getsize)


def flip_middle_byte(path: str) -> None:
    """Inverts one byte in the middle of the file (same size: invisible to size or existence checks)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate_half(path: str) -> None:
    """Cuts the file to half its size (an interrupted copy)."""
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
