"""The learning-benchmark harness (not installed with the library; needs the [bench] extra):
units and suites (``benchmark``), the report (``report``), the cluster launchers (``launchers``:
Ray, Slurm through submitit), results files (``files``), and the bandit of the multi-modality study
(``bandit``)."""
