"""Baselines to compare QSM with, in the same framework (critic ensemble, loop, buffer, checkpoints).

  sac.py   SAC (Haarnoja et al., 2018): tanh-Gaussian policy, learned temperature
  td3.py   TD3 (Fujimoto et al., 2018): deterministic policy, target smoothing, delayed updates
  dql.py   Diffusion-QL (Wang et al., ICLR 2023) used online: the same diffusion policy as QSM,
           trained by back-propagating Q through the whole sampling chain

``qsm_jax.algorithms`` is the one registry behind ``--algo``.
"""
