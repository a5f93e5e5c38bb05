"""Valid ranges of numbers, as data: one table checks a value in the library and parses it on the command line.

    EPOCHS = Range(int, low=1)
    EPOCHS.check("epochs", -1)        # ValueError: epochs must be ≥ 1, got -1
    parser.add_argument("--epochs", type=EPOCHS.parse)   # convnext train: error: --epochs must be ≥ 1, got -1
"""
import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    kind: type = float  # int or float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is outside (> low rather than ≥ low)
    high_open: bool = False

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        return f"{'<' if self.high_open else '≤'} {self.high:g}"

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (below or above)

    def check(self, name: str, value) -> None:
        """Raise ValueError("NAME must be ≥ 1, got -1") for a value outside the range (None passes)."""
        if value is not None and not self.contains(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, text: str):
        """An argparse `type=`: the number, or an error that `cli.Parser` prints as one line."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if self.kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value


@dataclass(frozen=True)
class Choice:
    """A value from a fixed set (a model option's names or sizes), with Range's check and parse."""
    values: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))

    def check(self, name: str, value) -> None:
        if value is not None and value not in self.values:
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, text: str):
        for value in self.values:
            if str(value) == text:
                return value
        raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")


COUNT = Range(int, low=1)  # epochs, batch sizes, steps, top-k, ...
NON_NEGATIVE_INT = Range(int, low=0)  # workers, seeds
POSITIVE = Range(float, low=0, low_open=True)  # learning rates, clipping norms
NON_NEGATIVE = Range(float, low=0)  # weight decay, alphas, warm-up epochs
PROBABILITY = Range(float, low=0, high=1)  # probabilities, rates, smoothing
INPUT_SIZE = Range(int, low=16)  # the smallest any model takes (isotropic); each model checks its own
SHARE = Range(float, low=0, high=1, low_open=True)  # crop shares, EMA decays, layer decay
