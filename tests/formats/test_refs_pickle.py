"""Issue 17 item 3: ``refs(unc).p`` of a downloaded dataset was read with ``pickle.load``, which runs any code the
file names. The refs format holds only plain values, so it is read with an unpickler that loads nothing else,
in every command that reads it (validate, stats, import, eval)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from converters.rrsis import read_rrsis
from tests.support.cli import pslg, write_rrsis_dataset


class _PlantedCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.fixture()
def poisoned(tmp_path: Path) -> tuple[Path, Path]:
    """An RRSIS dataset whose refs pickle holds, beside its real refs, an object that runs code when unpickled."""
    root = write_rrsis_dataset(tmp_path / "data", {"train": 1, "val": 1})
    [refs_path] = root.glob("*/refs(unc).p")
    refs = pickle.loads(refs_path.read_bytes())
    marker = tmp_path / "code-ran"
    refs[0]["payload"] = _PlantedCode(marker)
    refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    return root, marker


@pytest.mark.parametrize("command", [("validate", "{root}"), ("stats", "{root}"),
                                     ("import", "rrsis", "{root}", "--out", "{out}"),
                                     ("eval", "--data", "{root}", "--split", "val", "--oracle-box")])
def test_no_command_runs_code_from_a_refs_pickle(poisoned, tmp_path: Path, command) -> None:
    root, marker = poisoned
    result = pslg(*[a.format(root=root, out=tmp_path / "tasks.json") for a in command])
    assert not marker.exists(), f"{command[0]} ran the pickle's code"
    assert result.exit_code != 0 and "exec; a refs file holds only" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_plain_refs_of_any_protocol_still_load(tmp_path: Path) -> None:
    from converters.rrsis import RefsFileError, load_refs

    root = write_rrsis_dataset(tmp_path / "data", {"train": 2})
    [refs_path] = root.glob("*/refs(unc).p")
    refs = pickle.loads(refs_path.read_bytes())
    for protocol in (0, 2, 4, 5):
        refs_path.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_refs(refs_path) == refs
        assert [r.ref_id for r in read_rrsis(root)] == [r["ref_id"] for r in refs]
    refs_path.write_bytes(pickle.dumps({"refs": refs}))
    with pytest.raises(RefsFileError, match="holds a dict, not a list of refs"):
        load_refs(refs_path)
    refs_path.write_bytes(pickle.dumps(refs)[:-20])
    with pytest.raises(RefsFileError, match="not a readable refs pickle"):
        load_refs(refs_path)
