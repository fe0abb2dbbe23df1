"""One training run (`experiment`), the choice of input pipeline (`inputs`), run directories
(`runs`), checkpoints (`checkpoints`) and the precision probe (`precision`)."""
