"""One training run (`experiment`) and its callbacks (`callbacks`), the choice of input pipeline
(`inputs`), prepared shards (`prepare`), run directories (`runs`), checkpoints (`checkpoints`)
and the precision probe (`precision`)."""
