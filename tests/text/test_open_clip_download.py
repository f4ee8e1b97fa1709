"""Own class names through a downloaded open_clip text tower (issue 45, item 4), real code end
to end: ``text.encoder=open_clip:hf-hub:<repo>`` fetches ``open_clip_config.json`` and the
weights through huggingface_hub, here from a local stand-in for the Hugging Face hub (a tiny
random CLIP; nothing leaves the machine), and embeds names no bank holds.
"""

import json
import subprocess
import sys

import pytest
import torch
from helpers import TINY_OPEN_CLIP_CONFIG
from safetensors.torch import save_file
from standin_hub import hub_environment, serve

from clipfuse.errors import ClipfuseError
from clipfuse.text.open_clip_encoder import parse_open_clip_argument
from clipfuse.text.registry import check_spec

REPO = "clipfuse-test/tiny-clip"
WEIGHTS = "open_clip_model.safetensors"  # what open_clip asks the hub for first

CHILD = """
import json, sys, torch
from open_clip import get_tokenizer
from open_clip.model import CLIP
from safetensors.torch import load_file
from clipfuse.build import create_model_from_config
from clipfuse.config import load_config
from clipfuse.errors import ClipfuseError
from clipfuse.text import create_text_encoder

repo, weights, model_cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
names = ["my custom widget", "sky"]
config = load_config(None, ["model.method=convformer", f"text.encoder=open_clip:hf-hub:{repo}",
                            "model.head_kwargs={dim: 16, num_blocks: 1, heads: 2}"])
model = create_model_from_config(config, names, pretrained=False)
reference = CLIP(**model_cfg)
reference.load_state_dict(load_file(weights))
tokens = get_tokenizer(f"hf-hub:{repo}")([f"a photo of a {name}." for name in names])
expected = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1)
try:
    create_text_encoder(f"open_clip:hf-hub:{repo}-without-weights")
    error = None
except ClipfuseError as raised:
    error = str(raised)
print(json.dumps({
    "same": torch.allclose(model.head.text_embeddings, expected, atol=1e-5),
    "width": model.head.text_embeddings.shape[1],
    "error": error,
}))
"""


@pytest.fixture
def hub(tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(0)
    state = CLIP(**TINY_OPEN_CLIP_CONFIG).state_dict()
    weights = tmp_path / WEIGHTS
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, weights)
    config = json.dumps({"model_cfg": TINY_OPEN_CLIP_CONFIG}).encode()
    files = {
        f"{REPO}/open_clip_config.json": config,
        f"{REPO}/{WEIGHTS}": weights.read_bytes(),
        f"{REPO}-without-weights/open_clip_config.json": config,
    }
    with serve(files) as endpoint:
        yield endpoint, weights


def test_own_class_names_are_embedded_by_an_open_clip_model_from_the_hub(hub, tmp_path):
    endpoint, weights = hub
    result = subprocess.run(
        [sys.executable, "-c", CHILD, REPO, str(weights), json.dumps(TINY_OPEN_CLIP_CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
        env=hub_environment(endpoint, tmp_path / "hf"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["same"], "the served weights, not open_clip's random initialisation"
    assert report["width"] == TINY_OPEN_CLIP_CONFIG["embed_dim"]
    assert list((tmp_path / "hf").rglob(WEIGHTS)), "the weights went through the hub cache"
    # A repo with a config but no weights: a one-line error, never random text vectors.
    assert "\n" not in report["error"]
    assert report["error"].startswith(
        f"text encoder 'open_clip:hf-hub:{REPO}-without-weights': could not load weights"
    )


def test_hub_specs_parse_and_malformed_ones_are_refused():
    assert parse_open_clip_argument(f"hf-hub:{REPO}") == (f"hf-hub:{REPO}", "")
    assert check_spec(f"open_clip:hf-hub:{REPO}") == f"open_clip:hf-hub:{REPO}"
    for bad in ["hf-hub:", "hf-hub:owner", "hf-hub:owner/name/extra", "hf-hub:/name"]:
        with pytest.raises(ClipfuseError, match="open_clip:hf-hub:<owner>/<name>"):
            parse_open_clip_argument(bad)
