"""The learning-benchmark harness (not installed with the library; needs the [bench] extra):
units and suites (``benchmark``), the report (``report``), and the bandit of the multi-modality
study (``bandit``)."""
