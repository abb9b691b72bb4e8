"""The training program around any registered agent (needs the [train] extra): the loop
(``train.train_and_evaluate``), opening a run (``opening``), restoring checkpoints (``restore``),
SIGINT/SIGTERM (``signals``), the fused compiled env step and the agents' initialisation (``fused``),
the device replay buffer (``replay``), envs (``envs``), checkpoint files (``checkpoint``), the run's
folder and its lock (``workdir``), outputs (``metrics``) and the flags generated from the configs
(``cli``)."""
