"""infer_probabilities and InferenceConfig (clipfuse.evaluation.tta): mmseg's test-time inference."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from clipfuse.evaluation import InferenceConfig, infer_probabilities

K = 4


@pytest.fixture
def conv() -> nn.Conv2d:
    """A 1 x 1 convolution: translation- and flip-equivariant, any input size."""
    torch.manual_seed(0)
    return nn.Conv2d(3, K, kernel_size=1).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 13, 17, generator=torch.Generator().manual_seed(1))


@torch.inference_mode()
def test_whole_is_softmax_of_the_logits(conv: nn.Conv2d, images: torch.Tensor) -> None:
    probabilities = infer_probabilities(conv, images, K)
    assert probabilities.shape == (2, K, 13, 17)
    torch.testing.assert_close(probabilities, conv(images).softmax(1))


@pytest.mark.parametrize(
    ("crop_size", "stride"),
    [((8, 8), (5, 5)), ((6, 10), (6, 3)), ((32, 32), (16, 16)), ((13, 17), (13, 17))],
)
@torch.inference_mode()
def test_slide_equals_whole_for_a_pointwise_model(
    conv: nn.Conv2d, images: torch.Tensor, crop_size: tuple[int, int], stride: tuple[int, int]
) -> None:
    whole = infer_probabilities(conv, images, K)
    slide = infer_probabilities(conv, images, K, mode="slide", crop_size=crop_size, stride=stride)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-5)


@torch.inference_mode()
def test_slide_windows_follow_mmseg() -> None:
    # H = 10, crop 6, stride 4: grids = (10 - 6 + 4 - 1) // 4 + 1 = 2, rows 0..6 and 4..10.
    # W = 7, crop 6, stride 5: grids = (7 - 6 + 5 - 1) // 5 + 1 = 2, columns 0..6 and then
    # 5..11, shifted back to end at the border: 1..7.
    windows: list[tuple[int, int, int, int]] = []

    def record(x: torch.Tensor) -> torch.Tensor:  # channels 0 / 1 hold the row / column index
        windows.append((int(x[0, 0, 0, 0]), int(x[0, 1, 0, 0]), *x.shape[-2:]))
        return x.new_zeros(x.shape[0], K, *x.shape[-2:])

    def coordinates(height: int, width: int) -> torch.Tensor:
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        return torch.stack([rows, cols, rows]).float().unsqueeze(0)

    infer_probabilities(
        record, coordinates(10, 7), K, mode="slide", crop_size=(6, 6), stride=(4, 5)
    )
    assert windows == [(0, 0, 6, 6), (0, 1, 6, 6), (4, 0, 6, 6), (4, 1, 6, 6)]

    windows.clear()  # smaller than the crop: one window, clamped to the image, no padding
    infer_probabilities(record, coordinates(4, 5), K, mode="slide", crop_size=(8, 8), stride=(6, 6))
    assert windows == [(0, 0, 4, 5)]


@torch.inference_mode()
def test_flip_with_a_flip_equivariant_model_changes_nothing(
    conv: nn.Conv2d, images: torch.Tensor
) -> None:
    torch.testing.assert_close(
        infer_probabilities(conv, images, K, flip=True), infer_probabilities(conv, images, K)
    )


@torch.inference_mode()
def test_flip_averages_the_flipped_back_prediction(conv: nn.Conv2d, images: torch.Tensor) -> None:
    ramp = torch.linspace(-3, 3, images.shape[-1])

    def skewed(x: torch.Tensor) -> torch.Tensor:  # not flip-equivariant
        return conv(x) + ramp[: x.shape[-1]] * torch.arange(K).view(1, K, 1, 1)

    expected = (skewed(images).softmax(1) + skewed(images.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(infer_probabilities(skewed, images, K, flip=True), expected)


@torch.inference_mode()
def test_multi_scale_shape_and_average(conv: nn.Conv2d, images: torch.Tensor) -> None:
    sizes: list[tuple[int, int]] = []

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(x.shape[-2:]))
        return conv(x)

    probabilities = infer_probabilities(model_fn, images, K, scales=(0.5, 1.0, 1.5), flip=True)
    assert probabilities.shape == (2, K, 13, 17)
    assert sizes == [(7, 9), (7, 9), (13, 17), (13, 17), (20, 26), (20, 26)]
    torch.testing.assert_close(probabilities.sum(1), torch.ones(2, 13, 17))

    constant = torch.ones(1, 3, 8, 8) * torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        infer_probabilities(conv, constant, K, scales=(0.75, 1.25)),
        infer_probabilities(conv, constant, K),
    )


@torch.inference_mode()
def test_output_size_resizes_the_logits_before_the_softmax(
    conv: nn.Conv2d, images: torch.Tensor
) -> None:
    probabilities = infer_probabilities(conv, images, K, output_size=(26, 40))
    assert probabilities.shape == (2, K, 26, 40)
    upsampled = F.interpolate(conv(images), size=(26, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(probabilities, upsampled.softmax(1))


def test_bad_arguments_raise(conv: nn.Conv2d, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"expected \(2, 5, 13, 17\)"):
        infer_probabilities(conv, images, 5)


def test_config_from_dict_normalises_yaml_lists() -> None:
    config = InferenceConfig.from_dict(
        {
            "mode": "slide",
            "crop_size": [512, 512],
            "stride": [341, 341],
            "flip": True,
            "scales": [0.5, 1],
        }
    )
    assert config == InferenceConfig("slide", (512, 512), (341, 341), True, (0.5, 1.0))
    assert InferenceConfig.from_dict({}) == InferenceConfig()


def test_config_kwargs_are_exactly_infer_probabilities_keywords(
    conv: nn.Conv2d, images: torch.Tensor
) -> None:
    config = InferenceConfig(
        mode="slide", crop_size=(8, 8), stride=(4, 4), flip=True, scales=(1.0, 0.5)
    )
    kwargs = config.as_kwargs()
    assert list(kwargs) == ["mode", "crop_size", "stride", "flip", "scales", "precision"]
    with torch.inference_mode():
        assert infer_probabilities(conv, images, K, **kwargs).shape == (2, K, 13, 17)
