"""qsm-jax: Q-Score Matching (Psenka et al., ICML 2024) as pure JAX functions."""

from setuptools import find_packages, setup

CORE = ["jax>=0.4.30", "flax>=0.8", "optax>=0.2", "chex>=0.1.86", "numpy>=1.24"]
TRAIN = [
    "gymnasium[mujoco]>=1.0",
    "mujoco>=3.0",
    "dm-control>=1.0.20",  # the paper's DeepMind Control tasks, as gymnasium ids through shimmy
    "shimmy[dm-control]>=1.3",
    "absl-py>=2.0",
    "orbax-checkpoint>=0.6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboardX>=2.6",
    "imageio>=2.30",  # evaluation videos (MP4 through the ffmpeg that imageio-ffmpeg bundles)
    "imageio-ffmpeg>=0.5",
]
BENCH = [
    "rliable>=1.2",  # benchmark statistics (IQM, stratified bootstrap CIs, probability of improvement)
    "pandas<3",  # rliable's arch does not import under pandas 3
    "scipy>=1.10",  # Student-t intervals in the report
]
WANDB = ["wandb>=0.17"]  # optional logging to Weights & Biases (--wandb_project)
CLUSTER = ["ray>=2.9", "submitit>=1.5"]  # the benchmark queue on a Ray cluster or on Slurm (--launcher)
DEV = ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.5"]

setup(
    name="qsm-jax",
    version="0.1.0",
    description="Q-Score Matching: diffusion-model policies trained off-policy from a critic's action-gradient, in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["qsm_jax", "qsm_jax.*"]),
    package_data={"qsm_jax": ["py.typed"]},
    # The core (losses, sampler, networks, train_step, the baselines' learners) needs only these.
    install_requires=CORE,
    extras_require={
        "train": TRAIN,  # the program: experiments/run.py and qsm_jax.program.train
        "bench": TRAIN + BENCH,  # the learning benchmark and its report
        "wandb": WANDB,
        "cluster": TRAIN + BENCH + CLUSTER,
        "dev": TRAIN + BENCH + WANDB + CLUSTER + DEV,
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
