"""checkpoint.py: checkpoints that are corrupt, hostile or foreign are refused without unpickling."""

from __future__ import annotations

import pytest
import torch

from mmfit.checkpoint import load_checkpoint
from mmfit.errors import CheckpointError


def test_corrupt_or_foreign_checkpoints_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    torch.save({"x": Boom()}, evil)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable mmfit checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "lightning", "state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mmfit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
