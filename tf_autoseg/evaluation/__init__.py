"""Scoring with labels: confusion counts, Hungarian matching, mIoU and the Keras metric
(`metrics`); the baselines scored by the same code (`baselines`); linear and MLP probes
(`probes`)."""
