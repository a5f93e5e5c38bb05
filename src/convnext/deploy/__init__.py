"""After training: exact inference folds (`optimize_for_inference`), export to ONNX, TorchScript and
ExportedProgram, the peers' implementations on the same weights, and the benchmark against them.

May import the runtime, models and checkpoints layers, never training or the commands.
"""
