"""The README's code stays true: its "ARM as a drop-in loss" snippet runs as written."""
import re

import torch
from torch import nn

from armlib.paths import REPO_ROOT

HEADING = "## ARM as a drop-in loss"


def readme_snippet(heading: str = HEADING) -> str:
    """The first fenced python block under ``heading`` in README.md (AssertionError if there is none)."""
    text = (REPO_ROOT / "README.md").read_text()
    assert heading in text, f"README.md has no heading {heading!r}"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no ```python block under {heading!r} in README.md"
    return match.group(1)


class DictNet(nn.Module):
    """A torchvision-style segmentation model: returns {"out": N×C×H×W logits}."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_readme_drop_in_snippet_runs_and_trains_model_and_arm():
    torch.manual_seed(0)
    model = DictNet()
    images = torch.randn(2, 3, 16, 24)
    masks = torch.randint(0, 5, (2, 16, 24))
    masks[:, :3] = 255                       # an ignored band, as coarse labels have
    before = {k: v.clone() for k, v in model.state_dict().items()}
    namespace = {"model": model, "images": images, "masks": masks}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    criterion, loss = namespace["criterion"], namespace["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())   # the model stepped
    arm_grad = [p.grad for p in criterion.parameters()]
    assert len(arm_grad) == 8 and all(g is not None for g in arm_grad)               # ARM got its gradient
    assert namespace["optimizer"].param_groups[1]["maximize"]                        # ...and ascends it
