"""In the wheel, the conformance suite and its snapshots live below this package."""
