"""The AC and ARL objectives of two views (METHOD.md section 5), as a layer.

`Objective` is what `AutoSegModel.train_step` and `test_step` minimise and report: AC's
lambda-weighted mutual information of the main head (and of the overclustering head), with
the joint distribution summed over replicas first, or ARL's InfoNCE of the features. It holds
the moving cluster marginals (`marginal_momentum`), its only state.
"""

import keras
import tensorflow as tf

from tf_autoseg.modeling import losses
from tf_autoseg.modeling.views import step_seed


class Objective(keras.layers.Layer):
    """AC or ARL of two forward passes (`tf_autoseg.modeling.network.Outputs`).

    Args:
        config: a `tf_autoseg.modeling.config.ObjectiveConfig`.
        num_classes, overclustering: the network's head sizes (overclustering None without
            that head).
        seed: the model's seed (ARL draws its negatives from it and the step).
        **kwargs: base layer arguments.
    """

    def __init__(self, config, num_classes, overclustering, seed, **kwargs):
        # float32 whatever the policy, and never cast: the loss is computed in float32.
        super().__init__(dtype="float32", autocast=False, **kwargs)
        self.config = config
        self.seed = seed
        self.entropy_weights = {"main": config.entropy_weight}
        if overclustering:
            over = config.over_entropy_weight
            self.entropy_weights["overclustering"] = config.entropy_weight if over is None else over
        # The moving cluster marginals (zeros until the first step records one). Every
        # replica computes the same value from the all-reduced joint; the first one's counts.
        self.marginals = {}
        if config.marginal_momentum > 0:
            sizes = {"main": num_classes, "overclustering": overclustering}
            for head, size in sizes.items():
                if size:
                    self.marginals[head] = self.add_weight(
                        shape=(size,), initializer="zeros", dtype="float32", trainable=False,
                        aggregation="only_first_replica", name=f"{head}_marginal",
                    )  # fmt: skip
        self.built = True  # every weight exists: nothing is built on a first call

    def joint(self, p1, p2):
        """The joint counts of two heads' probabilities in the displacement window, summed
        over replicas."""
        if self.config.per_offset:
            counts = losses.joint_counts_per_offset(p1, p2, self.config.displacement)
        else:
            counts = losses.joint_counts(p1, p2, self.config.displacement)
        return losses.all_reduce(counts)

    def _head_term(self, head, counts, update):
        """One head's lambda-weighted mutual information, with its moving marginal if any."""
        weight = self.entropy_weights[head]
        if head not in self.marginals:
            return losses.mutual_information_from_counts(counts, weight)
        estimate = self.marginals[head]
        marginal = losses.moving_marginal(
            losses.marginal_from_counts(counts), estimate, self.config.marginal_momentum
        )
        if update:
            estimate.assign(tf.stop_gradient(marginal))
        return losses.mutual_information_from_counts(counts, weight, marginal)

    def agreement(self, p1, p2):
        """The mutual information of two views' main-head probabilities in the window (pooled
        over offsets), summed over replicas: how far two orderings agree ("hard" sampling)."""
        counts = losses.joint_counts(p1, p2, self.config.displacement)
        return losses.mutual_information_from_counts(losses.all_reduce(counts))

    def compute(self, view1, view2, step, update=False):
        """(loss, mutual information of the main head) of two forward passes.

        With `update` (training steps), the moving marginals take this step's value.
        """
        (f1, p1, q1), (f2, p2, q2) = view1, view2
        counts = self.joint(p1, p2)
        mi = losses.mutual_information_from_counts(counts)
        if self.config.objective == "arl":
            loss = losses.arl_loss(
                f1, f2, self.config.temperature, self.config.num_negatives,
                seed=step_seed(self.seed, step, 3),
            )  # fmt: skip
            return loss, mi
        loss = -self._head_term("main", counts, update)
        if "overclustering" in self.entropy_weights:
            loss -= self._head_term("overclustering", self.joint(q1, q2), update)
        return loss, mi
