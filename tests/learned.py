"""What the tests that assert a learned quality share: the value they report and a switch that stops learning.

Each such test prints its measured quality as a `LEARNED <name> <value> >= <threshold>` (or `<=`) line (visible with
`pytest -s`), and takes its learning rate through `lr(...)`. `dev/quality_spread.py` runs them under several CPU
instruction sets and thread counts and reads those lines, to set each threshold from the worst case; with
DETECTION_TEST_UNTRAINABLE=1 every learning rate is 0 (a pipeline that does not learn), and each test must then
fail its threshold.
"""
import os

UNTRAINABLE = os.environ.get("DETECTION_TEST_UNTRAINABLE") == "1"


def lr(value: float) -> float:
    """The learning rate a learned-quality test trains with: `value`, or 0 in an untrainable run."""
    return 0.0 if UNTRAINABLE else value


def report(name: str, value: float, threshold: float, higher_is_better: bool = True) -> None:
    """Print the measured quality and the bound the test asserts (value >= threshold, or <= when not
    higher_is_better) for dev/quality_spread.py."""
    print(f"\nLEARNED {name} {value:.6f} {'>=' if higher_is_better else '<='} {threshold}", flush=True)
