"""The training program around any registered agent (needs the [train] extra): the loop
(``train.train_and_evaluate``), the fused compiled env step (``fused``), the device replay buffer
(``replay``), envs (``envs``), checkpoints (``checkpoint``), the run's folder and its lock
(``workdir``), outputs (``metrics``) and the flags generated from the configs (``cli``)."""
