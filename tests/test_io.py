"""glus.io: a result file appears whole or not at all."""
import pytest

from glus.io import atomic_path, atomic_write_json


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "result.gif"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".gif" and tmp != target  # writers pick by suffix
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first" and sorted(p.name for p in target.parent.iterdir()) == ["result.gif"]
    atomic_write_json(tmp_path / "m.json", {"jf": 0.5})
    assert (tmp_path / "m.json").read_text() == '{\n  "jf": 0.5\n}'
