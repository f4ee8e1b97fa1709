"""Do the class tokens stay distinct through a trained Conv-Former? (docs/research/results.md)

For each checkpoint: the mean pairwise cosine of the K class tokens before the fusion (T0) and
after it (T'), and the standard deviation over classes of the cosine score map S (0 = a map
that cannot tell classes apart), averaged over the first N CamVid val images at 240x320.

    python docs/scripts/text_collapse.py CKPT [CKPT ...] [--images 10] [--json out.json]
"""

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import clipfuse
from clipfuse.data import create_dataset
from clipfuse.models.score_map import cosine_score_map


def mean_pairwise_cosine(tokens: torch.Tensor) -> float:
    """Mean cosine over the K (K - 1) ordered pairs of distinct rows of K x C ``tokens``."""
    unit = F.normalize(tokens, dim=-1)
    cosine = unit @ unit.T
    off_diagonal = ~torch.eye(len(tokens), dtype=torch.bool)
    return cosine[off_diagonal].mean().item()


@torch.inference_mode()
def measure(checkpoint: str, images: list[np.ndarray]) -> dict:
    model = clipfuse.load(checkpoint)
    segmentor, head = model.segmentor, model.segmentor.head
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    fused_cosine, score_spread = [], []
    for image in images:
        pixels = torch.tensor(image).permute(2, 0, 1)[None].float()
        c5 = segmentor.backbone((pixels - mean) / std)[-1]
        fused_image, fused_text = head.fusion(head.image_proj(c5), head.text_tokens())
        fused_cosine.append(mean_pairwise_cosine(fused_text[0]))
        score_spread.append(cosine_score_map(fused_image, fused_text).std(dim=1).mean().item())
    return {
        "checkpoint": checkpoint,
        "text_scale": head.text_scale,
        "T0_pairwise_cosine": mean_pairwise_cosine(head.text_tokens()),
        "T_fused_pairwise_cosine": float(np.mean(fused_cosine)),
        "score_map_std_over_classes": float(np.mean(score_spread)),
        "images": len(images),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    dataset = create_dataset("camvid", split="val")
    images = [
        np.asarray(Image.fromarray(dataset.load(index)[0]).resize((320, 240), Image.BILINEAR))
        for index in range(args.images)
    ]
    results = [measure(path, images) for path in args.checkpoints]
    for row in results:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
