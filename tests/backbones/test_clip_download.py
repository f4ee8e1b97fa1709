"""The download path of a Table 2 row, real code end to end: ``pretrained: true`` on
``resnet50_clip.openai`` fetches timm's hub file through huggingface_hub, here from a local
HTTP server standing in for the Hugging Face hub (random weights; nothing leaves the machine).
"""

import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from standin_hub import hub_environment, serve

REPO = "timm/resnet50_clip.openai"
FILE = "model.safetensors"  # what timm asks the hub for first

CHILD = """
import json, sys, torch
from safetensors.torch import load_file
from clipfuse.config import load_config
from clipfuse.build import create_model_from_config

served = load_file(sys.argv[1])
config = load_config(None, [
    "model.method=denseclip", "model.backbone=resnet50_clip.openai",
    "model.backbone_kwargs={pretrained: true}", "text.encoder=random:1024",
    "model.head_kwargs={context_width: 16, context_heads: 2}", "model.decoder_kwargs={channels: 16}",
])
model = create_model_from_config(config, ["road", "sky"])
trunk = model.backbone.body.state_dict()
print(json.dumps({
    "stem": torch.equal(trunk["stem_conv1.conv.weight"], served["stem.conv1.conv.weight"].float()),
    "last": torch.equal(trunk["stages_3.2.conv3_1x1.conv.weight"],
                        served["stages.3.2.conv3_1x1.conv.weight"].float()),
    "pool": torch.equal(model.head.pool.q_proj.weight, served["head.q.weight"].float()),
}))
"""


@pytest.fixture
def hub(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("resnet50_clip", pretrained=False).state_dict()
    weights = tmp_path / FILE
    save_file({k: v.half().contiguous() for k, v in state.items()}, weights)  # half: smaller
    with serve({f"{REPO}/{FILE}": weights.read_bytes()}) as endpoint:
        yield endpoint, weights


def test_pretrained_clip_backbone_downloads_through_the_hub_and_says_so(hub, tmp_path):
    endpoint, weights = hub
    env = hub_environment(endpoint, tmp_path / "hf")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(weights)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "stem": True,
        "last": True,
        "pool": True,
    }
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert any("resnet50_clip.openai: timm's pretrained weights" in line for line in notes)
    assert any(
        "attention pool starts from resnet50_clip.openai's pretrained" in line for line in notes
    )
    assert list((tmp_path / "hf").rglob(FILE)), "the weights went through the hub cache"
