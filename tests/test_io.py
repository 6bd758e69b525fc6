import os
import stat

from radgen.io import atomic_dir, atomic_write_text


def test_atomic_files_get_normal_permissions(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("y")
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
    assert (tmp_path / "d" / "f").read_text() == "y"
    # a library that writes owner-only files inside the folder (safetensors does) does not make the model private
    import torch
    from safetensors.torch import save_file

    with atomic_dir(tmp_path / "m") as d:
        (d / "sub").mkdir()
        save_file({"w": torch.zeros(2)}, str(d / "sub" / "model.safetensors"))
    assert stat.S_IMODE((tmp_path / "m" / "sub" / "model.safetensors").stat().st_mode) == 0o666 & ~mask


def test_a_killed_writes_leftovers_go_at_the_next_write_of_that_file_once_stale(tmp_path):
    import time

    stale_file = tmp_path / ".scores.json.ab12cd34.tmp"  # what mkstemp leaves when the writer is killed
    stale_dir = tmp_path / ".model.zz99yy88.tmp"
    fresh = tmp_path / ".scores.json.ef56gh78.tmp"  # a write in progress right now: kept
    other = tmp_path / ".scores.json.bak.tmp"  # not our naming: kept
    neighbour = tmp_path / ".scores.jsonl.ab12cd34.tmp"  # another file's leftover: kept
    for item in (stale_file, fresh, other, neighbour):
        item.write_text("partial")
    stale_dir.mkdir()
    (stale_dir / "weights.bin").write_bytes(b"x")
    old = time.time() - 2 * 3600
    for item in (stale_file, stale_dir, other, neighbour):
        os.utime(item, (old, old))

    atomic_write_text(tmp_path / "scores.json", "{}\n")
    assert not stale_file.exists() and fresh.exists() and other.exists() and neighbour.exists()
    assert (tmp_path / "scores.json").read_text() == "{}\n"
    with atomic_dir(tmp_path / "model") as folder:
        (folder / "weights.bin").write_bytes(b"y")
    assert not stale_dir.exists() and (tmp_path / "model" / "weights.bin").read_bytes() == b"y"
