"""`peer-net4`: the public PyTorch reimplementation's network, rebuilt for a like-for-like timing.

Unmasked stem (3x3 conv 3->64 stride 2, BN, ReLU, 3x3 max-pool stride 2:
output stride 4), then 4 autoregressive blocks with input channels 64, 128,
256, 512, each one masked 3x3 conv C->2C followed by five 1x1 convs at 2C
(ending at 1024 channels), a 1x1 head to K=3, bilinear x4 upsampling,
softmax: 13.2M parameters, 27.1 forward GFLOP per 128x128 image. It trains
with `AutoSegModel`'s own step (two orderings, AC loss).
"""

import keras

from tf_autoseg import AutoSegModel
from tf_autoseg import ShiftedMaskedConv2D
from tf_autoseg.layers.backbones import ConvStem
from tf_autoseg.modeling.network import AutoSegNetwork


class PeerBlock(keras.layers.Layer):
    """One masked 3x3 conv C->2C, then five 1x1 convs at 2C, ReLU between."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        policy = self.dtype_policy
        self.masked = ShiftedMaskedConv2D(2 * channels, 3, dtype=policy)
        self.pointwise = [keras.layers.Conv2D(2 * channels, 1, dtype=policy) for _ in range(5)]

    def call(self, x, ordering=None, training=None):
        x = keras.ops.relu(self.masked(x, ordering=ordering))
        for conv in self.pointwise:
            x = keras.ops.relu(conv(x))
        return x


class PeerNetwork(AutoSegNetwork):
    """The network with the peer's layer stack (`base` = 64 gives the published sizes)."""

    def __init__(self, base=64, **kwargs):
        super().__init__(num_classes=3, front="stem", stride=4, width=base, ar_blocks=0, **kwargs)
        self.front_layer = ConvStem(base, stride=4, dtype=self.dtype_policy, name="front")
        self.ar_layers = [
            PeerBlock(base * 2**i, dtype=self.dtype_policy, name=f"peer_block{i}") for i in range(4)
        ]


class PeerNet4(AutoSegModel):
    """AutoSegModel around `PeerNetwork`, trained by the model's own step."""

    def __init__(self, input_shape, base=64, **kwargs):
        self.base = base
        super().__init__(3, input_shape, front="stem", stride=4, width=base, ar_blocks=0, **kwargs)

    def make_network(self):
        return PeerNetwork(self.base, dtype=self.dtype_policy, name="network")
