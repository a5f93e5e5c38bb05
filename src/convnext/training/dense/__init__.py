"""Detection and segmentation training: data in COCO and mask-folder form, the built-in shapes set,
and evaluation with the field's definitions (COCO AP through pycocotools, ADE20K-style mIoU)."""
