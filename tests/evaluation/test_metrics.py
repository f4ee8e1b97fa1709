"""SegmentationMetrics (clipfuse.evaluation.metrics): mmseg's mIoU / mAcc / aAcc, tables, JSON."""

import json
import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from clipfuse.evaluation import SegmentationMetrics, format_table, results_to_json

IGNORE = 255


def _hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """2 x 3 maps, 3 classes, one ignored pixel (its prediction, class 2, is not scored).

    target        preds
    0 0 1         0 1 1
    1 1 255       1 0 2

    Scored pixels (target, pred): (0,0) (0,1) (1,1) (1,1) (1,0).
    Confusion matrix (rows GT, columns pred):
        [[1, 1, 0],
         [1, 2, 0],
         [0, 0, 0]]
    class 0: TP 1, GT 2, pred 2, union 2 + 2 - 1 = 3 -> IoU 1/3 = 33.33 %, Acc 1/2 = 50 %
    class 1: TP 2, GT 3, pred 3, union 3 + 3 - 2 = 4 -> IoU 2/4 = 50 %,    Acc 2/3 = 66.67 %
    class 2: no GT, no pred                           -> IoU NaN,          Acc NaN
    mIoU = (100/3 + 50) / 2 = 41.67 %, mAcc = (50 + 200/3) / 2 = 58.33 %
    aAcc = (1 + 2) / 5 = 60 %
    """
    target = torch.tensor([[[0, 0, 1], [1, 1, IGNORE]]])
    preds = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    return preds, target


def test_hand_computed_example() -> None:
    preds, target = _hand_example()
    metric = SegmentationMetrics(num_classes=3)
    metric.update(preds, target)
    results = metric.compute()
    assert results["confmat"].tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    iou, acc = results["IoU"].tolist(), results["Acc"].tolist()
    assert iou[:2] == pytest.approx([100 / 3, 50.0], rel=1e-12)
    assert acc[:2] == pytest.approx([50.0, 200 / 3], rel=1e-12)
    assert math.isnan(iou[2]) and math.isnan(acc[2])
    assert results["mIoU"] == pytest.approx((100 / 3 + 50) / 2, rel=1e-12)
    assert results["mAcc"] == pytest.approx((50 + 200 / 3) / 2, rel=1e-12)
    assert results["aAcc"] == pytest.approx(60.0, rel=1e-12)


def test_predicted_but_absent_class_scores_zero_iou() -> None:
    # GT all class 0, one pixel predicted 1: class 1 has IoU 0 (counted in mIoU), Acc NaN.
    metric = SegmentationMetrics(num_classes=2)
    metric.update(torch.tensor([[[0, 0, 0, 1]]]), torch.tensor([[[0, 0, 0, 0]]]))
    results = metric.compute()
    assert results["IoU"].tolist() == pytest.approx([75.0, 0.0])
    assert results["mIoU"] == pytest.approx(37.5)
    assert math.isnan(results["Acc"][1].item())
    assert results["mAcc"] == pytest.approx(75.0)
    assert results["aAcc"] == pytest.approx(75.0)


def test_agrees_with_torchmetrics_on_random_data() -> None:
    generator = torch.Generator().manual_seed(0)
    num_classes = 5
    target = torch.randint(0, num_classes, (4, 24, 32), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE
    preds = torch.where(
        torch.rand(target.shape, generator=generator) < 0.6,
        target.clamp(max=num_classes - 1),
        torch.randint(0, num_classes, target.shape, generator=generator),
    )
    metric = SegmentationMetrics(num_classes)
    metric.update(preds, target)
    results = metric.compute()

    jaccard = MulticlassJaccardIndex(num_classes, average=None, ignore_index=IGNORE)
    recall = MulticlassAccuracy(num_classes, average=None, ignore_index=IGNORE)
    micro = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
    torch.testing.assert_close(
        results["IoU"].float(), jaccard(preds, target) * 100, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        results["Acc"].float(), recall(preds, target) * 100, rtol=0, atol=1e-5
    )
    assert results["aAcc"] == pytest.approx(micro(preds, target).item() * 100, abs=1e-4)


def test_logits_and_labels_give_the_same_result() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    target = torch.randint(0, 4, (2, 8, 8), generator=generator)
    target[:, 0] = IGNORE
    from_logits, from_labels = SegmentationMetrics(4), SegmentationMetrics(4)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert torch.equal(from_logits.compute()["confmat"], from_labels.compute()["confmat"])


def test_uint8_target_is_accepted() -> None:
    preds, target = _hand_example()
    metric = SegmentationMetrics(3)
    metric.update(preds, target.to(torch.uint8))
    assert metric.compute()["confmat"].tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_target_label_out_of_range_raises(bad: int) -> None:
    target = torch.tensor([[[0, 1, bad]]])
    with pytest.raises(ValueError, match=rf"target contains label {bad}\b"):
        SegmentationMetrics(3).update(torch.zeros_like(target), target)


def test_shape_and_channel_mismatches_raise() -> None:
    metric = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="does not match"):
        metric.update(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="channels"):
        metric.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_state_is_an_int64_confmat() -> None:
    metric = SegmentationMetrics(6)
    assert metric.confmat.shape == (6, 6) and metric.confmat.dtype == torch.int64


def test_distributed_style_merge_equals_single_pass() -> None:
    generator = torch.Generator().manual_seed(2)
    preds = torch.randint(0, 4, (4, 10, 10), generator=generator)
    target = torch.randint(0, 4, (4, 10, 10), generator=generator)
    target[:, :, 0] = IGNORE
    whole, first, second = SegmentationMetrics(4), SegmentationMetrics(4), SegmentationMetrics(4)
    whole.update(preds, target)
    first.update(preds[:2], target[:2])
    second.update(preds[2:], target[2:])
    first.merge_state(second)
    merged, single = first.compute(), whole.compute()
    assert torch.equal(merged["confmat"], single["confmat"])
    assert merged["mIoU"] == single["mIoU"]
    torch.testing.assert_close(merged["IoU"], single["IoU"], equal_nan=True)


def _hand_results() -> dict:
    preds, target = _hand_example()
    metric = SegmentationMetrics(3)
    metric.update(preds, target)
    return metric.compute()


def test_format_table_lists_every_class_and_the_summary() -> None:
    names = ["road", "sidewalk", "building"]
    table = format_table(_hand_results(), names)
    for name in names:
        assert name in table
    assert "33.33" in table and "66.67" in table and "nan" in table
    assert table.splitlines()[-1] == "aAcc: 60.00  mIoU: 41.67  mAcc: 58.33"


def test_results_to_json_is_serialisable_with_nan_as_null() -> None:
    payload = results_to_json(_hand_results(), ["road", "sidewalk", "building"])
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["per_class"][2] == {"name": "building", "IoU": None, "Acc": None}
    assert payload["per_class"][0]["IoU"] == pytest.approx(100 / 3)
    assert payload["mIoU"] == pytest.approx(125 / 3)
    assert payload["aAcc"] == pytest.approx(60.0)


def test_wrong_number_of_class_names_raises() -> None:
    with pytest.raises(ValueError, match="2 class names given for 3 classes"):
        format_table(_hand_results(), ["a", "b"])
