"""COCO box and mask AP through pycocotools' COCOeval: AP, AP50, AP75 and small/medium/large, and AP
per class. Detections arrive as torchvision's detectors give them; an empty result is AP 0 (pycocotools'
`loadRes` cannot take an empty list)."""
import contextlib
import io

import numpy as np
import torch

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # JSON-friendly, as loadRes accepts it
    return rle


def coco_results(detections: list[dict], image_ids: list[int], label_to_category: dict[int, int]) -> list[dict]:
    """torchvision outputs (xyxy boxes, labels 1..K, scores, masks (N, 1, H, W) probabilities) in COCO form."""
    results = []
    for image_id, found in zip(image_ids, detections):
        boxes = found["boxes"].detach().cpu().float()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        masks = found.get("masks")
        binary = (masks[:, 0] > 0.5).cpu().numpy() if masks is not None else None
        for n, (box, label, score) in enumerate(zip(xywh, found["labels"].tolist(), found["scores"].tolist())):
            result = {"image_id": int(image_id), "category_id": label_to_category[label], "bbox": box, "score": score}
            if binary is not None:
                result["segmentation"] = rle(binary[n])
            results.append(result)
    return results


def coco_evaluate(ground_truth, results: list[dict], iou_types=("bbox",), image_ids: list[int] | None = None) -> dict:
    """{iou_type: {AP, AP50, ..., "per_class": {category name: AP}}} for a pycocotools COCO ground truth."""
    from pycocotools.cocoeval import COCOeval

    scores = {}
    for iou_type in iou_types:
        if not results:
            scores[iou_type] = {**{name: 0.0 for name in STATS},
                                "per_class": {c["name"]: 0.0 for c in ground_truth.cats.values()}}
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
            found = ground_truth.loadRes(results)
            evaluation = COCOeval(ground_truth, found, iou_type)
            if image_ids is not None:
                evaluation.params.imgIds = list(image_ids)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        # precision: [IoU thresholds, recall points, classes, areas, max detections]; -1 where undefined
        precision = evaluation.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for k, category in enumerate(evaluation.params.catIds):
            values = precision[:, :, k]
            values = values[values > -1]
            per_class[ground_truth.cats[int(category)]["name"]] = float(values.mean()) if values.size else float("nan")
        scores[iou_type] = {**{name: max(float(v), 0.0) for name, v in zip(STATS, evaluation.stats[:6])},
                            "per_class": per_class}
    return scores
