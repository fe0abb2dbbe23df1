"""The AC and ARL objectives of two views (METHOD.md section 5), as functions of the model.

`loss_and_mi` is what `AutoSegModel.train_step` and `test_step` minimise and report: AC's
lambda-weighted mutual information of the main head (and of the overclustering head), with
the joint distribution summed over replicas first, or ARL's InfoNCE of the features.
"""

import tensorflow as tf

from tf_autoseg.modeling import losses


def all_reduce(value):
    """Sum over replicas: the joint is global, so the loss equals one device's."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def joint_counts(model, p1, p2):
    """The joint counts of two heads' probabilities in the model's displacement window."""
    if model.per_offset:
        return losses.joint_counts_per_offset(p1, p2, model.displacement)
    return losses.joint_counts(p1, p2, model.displacement)


def head_term(model, head, counts, entropy_weight, update):
    """One head's lambda-weighted mutual information, with its moving marginal if any."""
    if head not in model.marginals:
        return losses.mutual_information_from_counts(counts, entropy_weight)
    estimate = model.marginals[head]
    marginal = losses.moving_marginal(
        losses.marginal_from_counts(counts), estimate, model.marginal_momentum
    )
    if update:
        estimate.assign(tf.stop_gradient(marginal))
    return losses.mutual_information_from_counts(counts, entropy_weight, marginal)


def loss_and_mi(model, view1, view2, update=False):
    """(loss, mutual information of the main head) for two forward passes of `model`.

    With `update` (training steps), the moving marginals take this step's value.
    """
    from tf_autoseg.modeling.views import step_seed

    (f1, p1, q1), (f2, p2, q2) = view1, view2
    counts = all_reduce(joint_counts(model, p1, p2))
    mi = losses.mutual_information_from_counts(counts)
    if model.objective == "arl":
        loss = losses.arl_loss(
            f1, f2, model.temperature, model.num_negatives, seed=step_seed(model, 3)
        )
        return loss, mi
    loss = -head_term(model, "main", counts, model.entropy_weight, update)
    if model.over_head is not None:
        over = all_reduce(joint_counts(model, q1, q2))
        weight = model.entropy_weight
        if model.over_entropy_weight is not None:
            weight = model.over_entropy_weight
        loss -= head_term(model, "overclustering", over, weight, update)
    return loss, mi
