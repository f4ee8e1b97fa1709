"""infer_probabilities and InferenceConfig (clipfuse.evaluation.tta): mmseg's test-time inference;
labels_in_strips: the same argmax, a band of columns at a time."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from clipfuse.evaluation import InferenceConfig, infer_probabilities
from clipfuse.evaluation.tta import BAND_COLUMNS, STRIP_BYTES, labels_in_strips, view_logits

K = 4
FP32 = "32-true"  # the arithmetic checked here is fp32's, whatever `auto` picks


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
    probabilities = infer_probabilities(conv, images, K, precision=FP32)
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
    whole = infer_probabilities(conv, images, K, precision=FP32)
    slide = infer_probabilities(
        conv, images, K, mode="slide", crop_size=crop_size, stride=stride, precision=FP32
    )
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
        infer_probabilities(conv, images, K, flip=True, precision=FP32),
        infer_probabilities(conv, images, K, precision=FP32),
    )


@torch.inference_mode()
def test_flip_averages_the_flipped_back_prediction(conv: nn.Conv2d, images: torch.Tensor) -> None:
    ramp = torch.linspace(-3, 3, images.shape[-1])

    def skewed(x: torch.Tensor) -> torch.Tensor:  # not flip-equivariant
        return conv(x) + ramp[: x.shape[-1]] * torch.arange(K).view(1, K, 1, 1)

    expected = (skewed(images).softmax(1) + skewed(images.flip(-1)).softmax(1).flip(-1)) / 2
    flipped = infer_probabilities(skewed, images, K, flip=True, precision=FP32)
    torch.testing.assert_close(flipped, expected)


@torch.inference_mode()
def test_multi_scale_shape_and_average(conv: nn.Conv2d, images: torch.Tensor) -> None:
    sizes: list[tuple[int, int]] = []

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(x.shape[-2:]))
        return conv(x)

    probabilities = infer_probabilities(
        model_fn, images, K, scales=(0.5, 1.0, 1.5), flip=True, precision=FP32
    )
    assert probabilities.shape == (2, K, 13, 17)
    assert sizes == [(7, 9), (7, 9), (13, 17), (13, 17), (20, 26), (20, 26)]
    torch.testing.assert_close(probabilities.sum(1), torch.ones(2, 13, 17))

    constant = torch.ones(1, 3, 8, 8) * torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        infer_probabilities(conv, constant, K, scales=(0.75, 1.25), precision=FP32),
        infer_probabilities(conv, constant, K, precision=FP32),
    )


@torch.inference_mode()
def test_output_size_resizes_the_logits_before_the_softmax(
    conv: nn.Conv2d, images: torch.Tensor
) -> None:
    probabilities = infer_probabilities(conv, images, K, output_size=(26, 40), precision=FP32)
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


def test_kwargs_reach_view_logits_too(conv: nn.Conv2d, images: torch.Tensor) -> None:
    kwargs = InferenceConfig(flip=True, scales=(1.0, 0.5)).as_kwargs()
    with torch.inference_mode():
        views = view_logits(conv, images, K, **kwargs)
    assert [[tuple(v.shape) for v in scale] for scale in views] == [
        [(2, K, 13, 17)] * 2,
        [(2, K, 7, 9)] * 2,
    ]


# -- the argmax a band of columns at a time ------------------------------------------------------


@pytest.mark.parametrize(
    ("output_size", "kwargs", "channels_last"),
    [
        ((150, 700), {}, False),  # 5 bands of 128 columns, the last 188
        ((301, 397), {"flip": True, "scales": (0.75, 1.0, 1.5)}, False),
        ((40, 260), {"flip": True}, True),  # channels-last logits, as a CPU model in bf16 gives
        ((26, 40), {}, False),  # narrower than two bands: one, the whole image
    ],
)
@torch.inference_mode()
def test_strips_give_the_whole_images_probabilities_bit_for_bit(
    conv: nn.Conv2d, images: torch.Tensor, output_size, kwargs, channels_last
) -> None:
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    whole = infer_probabilities(conv, images, K, output_size=output_size, **kwargs)
    views = view_logits(conv, images, K, **kwargs)
    scores = torch.empty_like(whole, memory_format=torch.contiguous_format)
    labels = labels_in_strips(views, output_size, scores, torch.uint8, strip_bytes=1)
    assert torch.equal(scores, whole)
    assert labels.dtype == torch.uint8 and torch.equal(labels, whole.argmax(1).to(torch.uint8))


class LargestTensor(TorchDispatchMode):
    """Records the bytes of the largest tensor any torch operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_leaves(out):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel() * item.element_size())
        return out


@torch.inference_mode()
def test_a_large_output_never_holds_its_full_size_probabilities(conv: nn.Conv2d) -> None:
    images = torch.randn(1, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    views = view_logits(conv, images, K)
    size = (1500, 2000)
    full_size = K * size[0] * size[1] * 4  # 48 MB of float32 probabilities
    with LargestTensor() as recorded:
        labels = labels_in_strips(views, size, dtype=torch.uint8)
    assert labels.shape == (1, *size)
    column = K * size[0] * 4  # a column of float32 probabilities
    # a band holds about STRIP_BYTES; the last one takes a remainder narrower than BAND_COLUMNS
    assert recorded.largest < STRIP_BYTES + BAND_COLUMNS * column < full_size / 2
    upsampled = F.interpolate(views[0][0], size=size, mode="bilinear", align_corners=False)
    assert torch.equal(labels[0], upsampled.argmax(1)[0].to(torch.uint8))


@pytest.mark.parametrize("output_size", [(150, 700), (26, 40)])
@torch.inference_mode()
def test_a_single_view_without_scores_is_the_argmax_of_its_resized_logits(
    conv: nn.Conv2d, images: torch.Tensor, output_size
) -> None:
    views = view_logits(conv, images, K)
    labels = labels_in_strips(views, output_size, dtype=torch.uint8, strip_bytes=1)
    whole = infer_probabilities(conv, images, K, output_size=output_size)
    assert torch.equal(labels, whole.argmax(1).to(torch.uint8))  # no tie in these
