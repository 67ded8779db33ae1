"""LKD-Net teacher: the released weights load strictly and our forward reproduces the authors' golden outputs.

The golden values were produced by the authors' own ``models/LKD.py`` (eval, float32, CPU) on the ITS weights for
a deterministic 1×3×64×96 input ``0.5 + 0.35·sin(0.11·x + 0.07·y + c)`` mapped to [-1, 1], output
``clamp(net(x), -1, 1)·0.5 + 0.5``; they are copied here from the project's design notes (LKD.md §8), together
with the output's mean and population std.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.teachers.lkd import LKDTeacher, load_lkd

WEIGHTS = Path(__file__).resolve().parents[2] / "training" / "teachers" / "weights"
POINTS = [(0, 0), (10, 20), (31, 47), (63, 95), (40, 70)]
GOLDEN = {
    "lkd-s-its.pth": (
        0.46137920022010803,
        0.2999093234539032,
        [
            [0.4613269865512848, 0.580708384513855, 0.838988721370697, 0.8190985321998596, 0.11048328876495361],
            [0.8514530658721924, 0.18133044242858887, 0.8466562032699585, 0.43652838468551636, 0.11266118288040161],
            [0.8834973573684692, 0.05065855383872986, 0.5034897327423096, 0.1016455888748169, 0.4516483545303345],
        ],
    ),
    "lkd-t-its.pth": (
        0.4521446228027344,
        0.27854472398757935,
        [
            [0.42732203006744385, 0.5707962512969971, 0.8021590709686279, 0.8103747367858887, 0.1303882896900177],
            [0.8034482598304749, 0.1950785219669342, 0.8128290176391602, 0.4152391254901886, 0.13195061683654785],
            [0.8366916179656982, 0.07874125242233276, 0.47751590609550476, 0.09030291438102722, 0.45749256014823914],
        ],
    ),
}
PARAMS = {"lkd-s": (636_208, 392), "lkd-t": (344_182, 206)}


def golden_input() -> torch.Tensor:
    y = torch.arange(64, dtype=torch.float64)[:, None]
    x = torch.arange(96, dtype=torch.float64)[None, :]
    img = torch.stack([0.5 + 0.35 * torch.sin(0.11 * x + 0.07 * y + c) for c in range(3)])
    return img[None].float()


@pytest.mark.parametrize("name", ["lkd-s-its.pth", "lkd-t-its.pth", "lkd-s-ots.pth", "lkd-t-ots.pth"])
def test_released_weights_load_strictly(name: str) -> None:
    net = load_lkd(WEIGHTS / name)
    params, keys = PARAMS[name[:5]]
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net.state_dict()) == keys
    assert not net.training


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_forward_matches_the_authors_golden_outputs(name: str) -> None:
    mean, std, values = GOLDEN[name]
    teacher = LKDTeacher.from_file(WEIGHTS / name)
    out = teacher(golden_input())
    assert out.shape == (1, 3, 64, 96)
    assert out.mean().item() == pytest.approx(mean, abs=1e-5)
    assert out.std(unbiased=False).item() == pytest.approx(std, abs=1e-5)
    for c in range(3):
        for (y, x), expected in zip(POINTS, values[c], strict=True):
            assert out[0, c, y, x].item() == pytest.approx(expected, abs=1e-4)


def test_a_wrong_checkpoint_fails_loudly(tmp_path: Path) -> None:
    state = load_lkd(WEIGHTS / "lkd-t-its.pth").state_dict()
    state.pop("skip1.weight")
    path = tmp_path / "broken.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    with pytest.raises(RuntimeError, match=r"skip1\.weight"):
        load_lkd(path, "lkd_t")
    with pytest.raises(ValueError, match="unknown LKD-Net variant"):
        load_lkd(WEIGHTS / "lkd-t-its.pth", "lkd_x")


@pytest.mark.parametrize("size", [(61, 94), (45, 41), (20, 30), (1, 1)])
def test_teacher_keeps_any_size_and_range(size: tuple[int, int]) -> None:
    teacher = LKDTeacher.from_file(WEIGHTS / "lkd-t-ots.pth")
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    out = teacher(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
