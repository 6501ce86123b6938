"""What every stage runs on: ``decode`` (batched greedy/sampled decoding on mlx-lm's BatchGenerator,
rows stopping at their cut), ``kernels`` (the CPU kernel swaps decoding and training use) and
``memory`` (what MLX holds, the wired limit, the no-swap check)."""
