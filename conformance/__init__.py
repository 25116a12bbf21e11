"""The conformance suite: one module per part of the report, each test tied to a claim."""
