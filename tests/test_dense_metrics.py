"""Dense evaluation: COCO AP 1.0 when the detections are the ground truth, 0 without detections (no
crash), and mIoU/mAcc/aAcc from one confusion matrix on hand-made cases."""
import math

import pytest
import torch

from convnext.training.dense.detection_metrics import coco_evaluate, coco_results
from helpers import coco_from_targets
from convnext.training.dense.segmentation_metrics import SegmentationScores

CATEGORIES = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}]
LABEL_TO_CATEGORY = {1: 3, 2: 7}  # the model's labels 1..K against the file's category ids


def ground_truth_targets():
    targets = []
    for shift in (0, 17):
        masks = torch.zeros(2, 64, 80, dtype=torch.uint8)
        masks[0, 5 + shift:25 + shift, 10:30] = 1
        masks[1, 30:60, 40 + shift // 2:70] = 1
        boxes = torch.tensor([[10.0, 5 + shift, 30, 25 + shift], [40.0 + shift // 2, 30, 70, 60]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return targets


def test_detections_equal_to_the_ground_truth_score_ap_1():
    targets = ground_truth_targets()
    ground_truth = coco_from_targets(targets, [(64, 80)] * 2, [11, 12], CATEGORIES, LABEL_TO_CATEGORY)
    detections = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.tensor([0.9, 0.8]),
                   "masks": t["masks"][:, None].float()} for t in targets]
    scores = coco_evaluate(ground_truth, coco_results(detections, [11, 12], LABEL_TO_CATEGORY), ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert scores[iou_type]["AP"] == pytest.approx(1.0) and scores[iou_type]["AP50"] == pytest.approx(1.0)
        assert scores[iou_type]["per_class"] == {"circle": pytest.approx(1.0), "square": pytest.approx(1.0)}
    # A box in the wrong place loses its class's AP at every threshold.
    detections[0]["boxes"] = detections[0]["boxes"].clone()
    detections[1]["boxes"] = detections[1]["boxes"].clone()
    for found in detections:
        found["boxes"][0] += 40
    moved = coco_evaluate(ground_truth, coco_results(detections, [11, 12], LABEL_TO_CATEGORY))["bbox"]
    assert moved["per_class"]["circle"] == 0 and moved["per_class"]["square"] == pytest.approx(1.0)
    assert moved["AP"] == pytest.approx(0.5)


def test_no_detections_give_ap_0_without_a_crash():
    targets = ground_truth_targets()
    ground_truth = coco_from_targets(targets, [(64, 80)] * 2, [1, 2], CATEGORIES, LABEL_TO_CATEGORY)
    nothing = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
                "masks": torch.zeros(0, 1, 64, 80)}] * 2
    results = coco_results(nothing, [1, 2], LABEL_TO_CATEGORY)
    scores = coco_evaluate(ground_truth, results, ("bbox", "segm"))
    assert results == [] and scores["bbox"]["AP"] == 0 == scores["segm"]["AP50"]
    assert scores["segm"]["per_class"] == {"circle": 0.0, "square": 0.0}


def test_miou_of_a_hand_made_case():
    # 2x4 target: class 0 on the left half, class 1 on the right, one pixel ignored.
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]])  # one 0 taken for 1; the ignored pixel says 2
    scores = SegmentationScores(3, ["a", "b", "c"])
    scores.update(prediction, target)
    result = scores.compute()
    # class 0: hit 3, truth 4, predicted 3 -> IoU 3/4; class 1: hit 3, truth 3, predicted 4 -> IoU 3/4.
    # class 2 never appears in truth nor (counted) prediction: left out of the means.
    assert result["mIoU"] == pytest.approx(0.75) and result["mAcc"] == pytest.approx((3 / 4 + 1) / 2)
    assert result["aAcc"] == pytest.approx(6 / 7) and math.isnan(result["per_class"][2]["IoU"])
    perfect = SegmentationScores(3)
    perfect.update(target.clamp(max=2), target.clamp(max=2))
    assert perfect.compute()["mIoU"] == 1.0
    with pytest.raises(ValueError, match="beyond the 3 classes"):
        perfect.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 5]]))
