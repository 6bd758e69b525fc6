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
