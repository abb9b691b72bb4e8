"""qsm_jax: Q-Score Matching (Psenka et al., ICML 2024) in JAX.

Where things are:
  losses.py     `qsm_actor_loss` (the QSM loss) and `critic_loss`
  diffusion.py  noise schedules and the reverse DDPM sampler `ddpm_sample` (lax.scan)
  learner.py    `QSMState`, `create_train_state`, the fused jitted `train_step`, `sample_actions`
  networks.py   the score network and the critic ensemble (flax.linen)
"""

from qsm_jax.config import QSMConfig
from qsm_jax.learner import QSMState, create_train_state, sample_actions, train_step
from qsm_jax.types import Batch, check_batch

__all__ = [
    "Batch",
    "QSMConfig",
    "QSMState",
    "check_batch",
    "create_train_state",
    "sample_actions",
    "train_step",
]
__version__ = "0.1.0"
