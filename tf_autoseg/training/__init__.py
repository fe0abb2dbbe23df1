"""One training run (`experiment`) from its configuration's sections (`sections`, parsed from
the flags' table, `config`), its callbacks (`callbacks`), the input builder (`inputs`), prepared
shards (`prepare`), run directories (`runs`), checkpoints (`checkpoints`) and the precision probe
(`precision`)."""
