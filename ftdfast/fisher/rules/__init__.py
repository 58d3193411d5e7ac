"""Built-in Fisher rules; importing this package registers them."""
from . import attention, conv, embedding, linear, norm  # noqa: F401
from . import embedding_bag, recurrent  # noqa: F401
from . import hf_conv1d, layer_norm_2d, layer_scale, rms_norm  # noqa: F401  (third-party classes: on import)
