"""What every stage runs on: ``memory`` (what MLX holds, the wired limit, the no-swap check)."""
