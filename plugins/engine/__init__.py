"""The privacy engine, split by job: the torchreid step (``step``), evaluation (``evaluator``),
the supervision-upgrade policy (``upgrade``), checkpoint state (``state``), the run loop
(``loop``), defaults for missing parts (``parts``) and multi-process wrapping (``ddp``)."""
from torchreid_privacy.registry import ENGINES

from .evaluator import Evaluator
from .loop import NonFiniteLossError
from .parts import EngineParts
from .step import ImagePrivacyEngine, PrivacyEngine
from .upgrade import UpgradePolicy, selection_score

ENGINES.register("privacy")(PrivacyEngine)

__all__ = ["PrivacyEngine", "ImagePrivacyEngine", "EngineParts", "Evaluator", "UpgradePolicy",
           "NonFiniteLossError", "selection_score"]
