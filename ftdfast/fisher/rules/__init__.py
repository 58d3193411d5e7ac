"""Built-in Fisher rules; importing this package registers them."""
from . import attention, conv, embedding, linear, norm  # noqa: F401
