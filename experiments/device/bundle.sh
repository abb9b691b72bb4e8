#!/usr/bin/env bash
# Builds .device/ here: what a lent GPU machine lacks to run learning units (its image has Python
# 3.12 with jax, flax, optax, chex, orbax, absl, matplotlib, but no simulator): wheels of gymnasium,
# mujoco, shimmy, tensorboardX and their needs, and dm_control without the locomotion and dog assets
# the units never load (56 MB -> 9 MB; the whole bundle must travel in under 64 MiB with the repo).
# Versions are constraints.txt's. Run once per checkout: `bash experiments/device/bundle.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
pin() { grep -i "^$1==" constraints.txt | head -1; }
rm -rf .device && mkdir -p .device/wheels .device/site
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
download() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$1" "${@:2}"
}
download .device/wheels "$(pin gymnasium)" "$(pin mujoco)" "$(pin shimmy)" "$(pin tensorboardX)" \
  "$(pin farama-notifications)" "$(pin glfw)" "$(pin pyopengl)" "$(pin dm-env)" "$(pin dm-tree)"
tmp=$(mktemp -d)
download "$tmp" "$(pin dm_control)"
python3 -m zipfile -e "$tmp"/dm_control-*.whl .device/site
rm -rf "$tmp" .device/site/dm_control/locomotion .device/site/dm_control/suite/dog_assets \
  .device/site/dm_control/suite/all_domains.png
du -sh .device
