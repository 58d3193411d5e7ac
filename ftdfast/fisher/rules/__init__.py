"""Built-in Fisher rules; importing this package registers them."""
from . import attention, conv, embedding, linear, norm  # noqa: F401
from . import embedding_bag, recurrent  # noqa: F401
from . import hf_conv1d, hf_embedding, layer_norm_2d, layer_scale, norm_act, rms_norm  # noqa: F401  (looked up lazily)
