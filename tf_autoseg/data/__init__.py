"""Data machinery that knows no dataset by name: the core every pipeline shares (`core`),
image reading (`images`, `headers`), the seeded order (`shuffling`), streaming from files
(`stream`), prepared TFRecord shards (`records`, `prepare`) and tf.data service (`service`).
The datasets themselves are in `tf_autoseg.datasets`."""
