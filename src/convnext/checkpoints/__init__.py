"""Weights on disk: the key maps of the official, timm, torchvision and transformers formats, strict
conversion among them, safe reading and checksummed writing, the published weights,
and the preprocessing a model's weights expect (ImageNet's mean, std and classes, the eval transform).

May import the models and runtime layers below it, never training, deploy or the commands above.
"""
