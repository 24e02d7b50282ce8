"""Built-in components; each module registers its classes/functions on import."""
from . import anonymizers  # noqa: F401
from . import residual_code  # noqa: F401
from . import learned_mosaic  # noqa: F401
from . import discriminators  # noqa: F401
from . import losses  # noqa: F401
from . import desensitizers  # noqa: F401
from . import backbones  # noqa: F401
from . import agw  # noqa: F401
