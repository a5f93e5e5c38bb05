"""The runtime: what the machine offers (CPU model and ISA flags, bf16 hardware), precision (autocast,
TF32), the process-wide switches a run sets and restores, atomic files, and the
valid ranges of numbers that every command parses.

This is the bottom layer: it imports only torch and the standard library, never the networks or
anything above them.
"""
