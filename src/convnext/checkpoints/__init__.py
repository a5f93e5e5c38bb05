"""Weights on disk: the key maps of the official, timm, torchvision and transformers formats, strict
conversion among them, safe reading and checksummed writing, the published weights, atomic writes,
and the preprocessing a model's weights expect (ImageNet's mean, std and classes, the eval transform).

May import the models layer below it, never training, deploy or the commands above.
"""
